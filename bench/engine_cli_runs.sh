#!/usr/bin/env bash
# The engine's CLI benchmark runs on the GPU machine (issue 16's workloads through `pagedattn bench-engine`),
# each as JSON in $OUT (or ./engine_runs): the nano-vllm workload on the Qwen3-0.6B shape with CUDA graphs, eager
# and with an fp8 cache, then the Llama-3.1-8B shape (1000 in / 1000 out) with bf16 and fp8 caches.
#   PAGEDATTN=build-gpu/tools/cli/pagedattn bash bench/engine_cli_runs.sh [quick]
set -uo pipefail
cli=${PAGEDATTN:-build-gpu/tools/cli/pagedattn}
out=${OUT:-engine_runs}
mkdir -p "$out"
quick=${1:-}
n_small=256 n_big=${N_BIG:-256}
[[ $quick == quick ]] && n_small=64 n_big=32
run() {  # name, then bench-engine flags
  local name=$1
  shift
  echo "== $name: $*"
  timeout "${RUN_TIMEOUT:-240}" "$cli" bench-engine --device cuda --output-json "$out/$name.json" "$@" 2>&1 |
    grep -v "requests$" | tr '\r' '\n' | grep -v "^\[" | tail -n 6
}
# W1: the nano-vllm workload (Qwen3-0.6B, lengths uniform in [100, 1024], ignore_eos).
w1=(--model qwen3-0.6b --num-prompts "$n_small" --input-len 562 --output-len 562 --random-range-ratio 0.822
  --max-model-len 2048 --temperature 1.0)
run w1_graphs "${w1[@]}"
run w1_eager "${w1[@]}" --enforce-eager
run w1_fp8 "${w1[@]}" --kv-cache-dtype fp8_e4m3
# Llama-3.1-8B shape, 1000 in / 1000 out; the pool fills what the weights leave of an 80 GB card.
w8=(--model llama-3.1-8b --num-prompts "$n_big" --input-len 1000 --output-len 1000 --max-model-len 2048
  --temperature 1.0)
run l8_bf16 "${w8[@]}" --num-blocks "${BLOCKS_BF16:-20000}"
run l8_fp8 "${w8[@]}" --num-blocks "${BLOCKS_FP8:-40000}" --kv-cache-dtype fp8_e4m3
