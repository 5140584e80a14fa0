#!/usr/bin/env bash
# compute-sanitizer over the CUDA test binary: memcheck (also with the portable kernels forced), synccheck and
# racecheck over the CUDA grid, graph replay, write_kv and the persistent decode, each run limited to
# SANITIZE_TIMEOUT seconds (default 120). A one-line summary per run goes to sanitizer_summary.txt, the full
# reports to sanitizers.log, both in the log folder. Exit status 0 only when every run finished clean.
#   scripts/sanitize.sh build-gpu/tests/pagedattn_cuda_tests [log folder]
# scripts/gpu-check.sh runs it with SANITIZE=1; on its own it takes a test binary built elsewhere.
set -uo pipefail
tests=${1:?usage: scripts/sanitize.sh <pagedattn_cuda_tests binary> [log folder]}
logs=${2:-.}
mkdir -p "$logs"
sanitizer=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
grid='Grid/CudaGrid.*'
more='CudaAttention.GraphReplayEqualsEager:CudaWriteKV.*:CudaAttention.DecodeWithMoreItemsThanResidentCtas'
# tool | log name | environment | gtest filter | shards: a run takes shard 0 of N (gtest deals the cases
# round-robin, so half of the 168 grid cases still has every head dim and ratio)
runs=("memcheck|memcheck|-|$grid:$more:CudaAttention.DecodeNeverReadsInvisibleKeys|2"
      "memcheck|memcheck_portable|PAGEDATTN_WGMMA=0 PAGEDATTN_USE_TMA=0|$grid:$more|4"
      "synccheck|synccheck|-|$grid:$more|4"
      "racecheck|racecheck|-|$grid|2"
      "racecheck|racecheck_persistent|-|CudaAttention.PersistentDecodeOfShortItems|1")
rc_all=0
for run in "${runs[@]}"; do
  IFS='|' read -r tool name envs filter shards <<<"$run"
  echo "== compute-sanitizer --tool $tool ($name)"
  start=$(date +%s)
  extra_env=()
  [[ "$envs" != "-" ]] && read -r -a extra_env <<<"$envs"
  tool_flags=(--tool "$tool" --print-limit 20 --error-exitcode 99)
  [[ "$tool" == racecheck ]] && tool_flags+=(--racecheck-report hazard)
  env "${extra_env[@]+"${extra_env[@]}"}" GTEST_TOTAL_SHARDS="$shards" GTEST_SHARD_INDEX=0 \
    timeout "${SANITIZE_TIMEOUT:-120}" "$sanitizer" "${tool_flags[@]}" "$tests" --gtest_filter="$filter" \
    >"$logs/sanitizer_run.tmp" 2>&1
  rc=$?
  { echo "######## $name (compute-sanitizer --tool $tool, shard 0 of $shards, ${envs})"; cat "$logs/sanitizer_run.tmp"; } \
    >>"$logs/sanitizers.log"
  [[ $rc -ne 0 ]] && rc_all=1
  ran=$(grep -oE "^\[==========\] [0-9]+ tests? from [0-9]+ test suites? ran" "$logs/sanitizer_run.tmp" | tail -n 1)
  printf '%-18s rc %d, %ds, %s: %s\n' "$name" "$rc" $(($(date +%s) - start)) "${ran:-no gtest summary}" \
    "$(grep -E "ERROR SUMMARY|RACECHECK SUMMARY" "$logs/sanitizer_run.tmp" | tail -n 1 | sed 's/^=* *//')" |
    tee -a "$logs/sanitizer_summary.txt"
  grep -E "^\[  FAILED  \]" "$logs/sanitizer_run.tmp" | head -n 5
done
rm -f "$logs/sanitizer_run.tmp"
exit $rc_all
