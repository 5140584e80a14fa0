"""The engine's serving benchmark (shared/ENGINE.md) through `pagedattn bench-engine`: W1 the nano-vllm workload
(exact requests; CUDA graphs, eager, fp8 cache), W2 the source documents' grid (batch x prompt x output:
throughput, TTFT, TPOT, end-to-end p50/p99, KV memory in use; plots), W3 paged vs the traditional contiguous cache
at a long context (admitted concurrency and tok/s), W4 Llama-3.1-8B 1000 in / 1000 out (bf16 and fp8 caches), the
graphs on/off comparison on a decode-heavy run, and the in-box peer (Hugging Face transformers on the same
random-weight model). Every run reports its roofline fraction (the CLI measures the card's copy bandwidth and
bf16 matmul rate). JSON per run + one summary JSON + PNG plots in --out.

    python3 bench/engine_bench.py --cli build-gpu/tools/cli/pagedattn --out results/        # on the GPU machine
    python3 bench/engine_bench.py --cli build/tools/cli/pagedattn --device cpu --quick     # anywhere (a smoke run)

Timing: all requests are submitted at t = 0 (offline) after one untimed warm-up generate; TTFT = first token -
submission, TPOT = (E2E - TTFT) / (tokens - 1), as vLLM defines them; throughput = output tokens / wall time of
the whole run, prefill included.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time

VOCAB = {"qwen3-0.6b": 151936, "llama-3.1-8b": 128256, "llama-2-7b": 32000, "llama-2-13b": 32000,
         "tiny-llama": 512, "tiny-qwen3": 512}


def w1_requests(quick=False):
    """ENGINE.md's W1 exactly: random.seed(0); all prompts, then all max_tokens."""
    random.seed(0)
    n, lo, hi = (16, 8, 64) if quick else (256, 100, 1024)
    prompts = [[random.randint(0, 10000) for _ in range(random.randint(lo, hi))] for _ in range(n)]
    max_tokens = [random.randint(lo if quick else 100, hi) for _ in range(n)]
    return prompts, max_tokens


def write_requests(path, prompts, max_tokens, vocab):
    with open(path, "w") as f:
        for p, m in zip(prompts, max_tokens):
            f.write(f"{m} " + " ".join(str(t % vocab) for t in p) + "\n")


def bench(args, name, *flags, timeout=None):
    """One `pagedattn bench-engine` run; its JSON (None when it failed or timed out)."""
    out = os.path.join(args.out, f"{name}.json")
    cmd = [args.cli, "bench-engine", "--device", args.device, "--output-json", out, *map(str, flags)]
    t0 = time.time()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout or args.run_timeout)
    except subprocess.TimeoutExpired:
        print(f"{name}: timed out after {timeout or args.run_timeout} s")
        return None
    text = (p.stdout + p.stderr).replace("\r", "\n")
    lines = [ln for ln in text.splitlines() if ln and not ln.startswith("[")]
    if p.returncode != 0 or not os.path.exists(out):
        print(f"{name}: failed (rc {p.returncode})\n  " + "\n  ".join(lines[-6:]))
        return None
    r = json.load(open(out))
    r["name"] = name
    print(f"{name:28s} {r['output_tokens_per_second']:9.1f} out tok/s  TTFT p50 {r['ttft_p50_ms']:8.1f} ms  "
          f"TPOT p50 {r['tpot_p50_ms']:7.2f} ms  E2E p99 {r['e2e_p99_ms']:9.1f} ms  conc {r['max_concurrency']:4d}  "
          f"KV peak {r['kv_peak_bytes'] / 2**30:6.2f} GiB  roofline {100 * r['roofline_fraction']:5.1f}%  "
          f"host {100 * r['host_fraction']:4.1f}%  ({time.time() - t0:.0f} s)", flush=True)
    return r


def w1(args):
    model = args.small_model
    prompts, max_tokens = w1_requests(args.quick)
    path = os.path.join(args.out, "w1_requests.txt")
    write_requests(path, prompts, max_tokens, VOCAB[model])
    print(f"W1: {len(prompts)} requests, {sum(map(len, prompts))} prompt tokens, {sum(max_tokens)} output tokens")
    common = ["--model", model, "--requests-file", path, "--temperature", 0.6, "--max-model-len", 2048]
    runs = {"graphs": bench(args, "w1_graphs", *common)}
    if not args.quick and args.device != "cpu":
        runs["eager"] = bench(args, "w1_eager", *common, "--enforce-eager")
        runs["fp8"] = bench(args, "w1_fp8", *common, "--kv-cache-dtype", "fp8_e4m3")
    return runs


def w2(args):
    model = args.model
    batches = [1, 8] if args.quick else [1, 8, 32, 64, 128, 256]
    prompt_lens = [16, 64] if args.quick else [128, 1024, 4096]
    output_lens = [8] if args.quick else args.w2_outputs
    rows = []
    for o in output_lens:
        for p in prompt_lens:
            for b in batches:
                r = bench(args, f"w2_b{b}_p{p}_o{o}", "--model", model, "--num-prompts", b, "--input-len", p,
                          "--output-len", o, "--max-num-seqs", b, "--max-model-len", p + o + 16,
                          "--kv-cache-gib", args.kv_cache_gib)
                if r:
                    r.update(batch=b, prompt_len=p, output_len=o)
                    rows.append(r)
    return rows


def w3(args):
    """Paged vs contiguous on the same pool and requests: a pool of half of what n requests of the full context
    reserve, so the contiguous cache admits n / 2 at most; prompts of half the context, outputs of a quarter."""
    out = {}
    cases = [("llama-2-7b", 8192, args.w3_requests)] if not args.quick else [(args.model, 256, 8)]
    if not args.quick and args.w3_13b:
        cases.append(("llama-2-13b", 32768, max(2, args.w3_requests // 4)))
    for model, ctx, n in cases:
        for layout in ("paged", "contiguous"):
            blocks = n * ctx // 2 // 16
            r = bench(args, f"w3_{model}_{ctx}_{layout}", "--model", model, "--num-prompts", n, "--input-len",
                      ctx // 2, "--output-len", ctx // 4, "--max-model-len", ctx, "--max-num-seqs", n,
                      "--kv-layout", layout, "--num-blocks", blocks)
            if r:
                out[f"{model}@{ctx}/{layout}"] = r
    return out


def w4(args):
    n, length = (8, 32) if args.quick else (args.w4_requests, 1000)
    runs = {}
    for fmt in ("bf16", "fp8_e4m3") if args.device != "cpu" else ("auto", "fp8_e4m3"):
        runs[fmt] = bench(args, f"w4_{fmt}", "--model", args.model, "--num-prompts", n, "--input-len", length,
                          "--output-len", length, "--max-model-len", 2 * length + 48, "--kv-cache-dtype", fmt,
                          "--kv-cache-gib", args.kv_cache_gib)
    return runs


def graphs_on_off(args):
    """A decode-heavy run (short prompts, long outputs) with and without CUDA graphs."""
    common = ["--model", args.small_model, "--num-prompts", 64, "--input-len", 128, "--output-len", 512,
              "--max-model-len", 1024]
    return {"graphs": bench(args, "decode_graphs", *common), "eager": bench(args, "decode_eager", *common,
                                                                           "--enforce-eager")}


def transformers_peer(args):
    """Hugging Face transformers on the Qwen3-0.6B shape with random bf16 weights: 64 of W1's requests with outputs
    capped at 128 (ENGINE.md's measurement), static-batch generate (left-padded), and ours on the same requests."""
    try:
        import torch
        from transformers import AutoModelForCausalLM, Qwen3Config
    except ImportError as e:
        print(f"transformers peer: skipped ({e})")
        return None
    prompts, max_tokens = w1_requests(False)
    prompts, max_tokens = prompts[:64], [min(m, 128) for m in max_tokens[:64]]
    cfg = Qwen3Config(vocab_size=151936, hidden_size=1024, intermediate_size=3072, num_hidden_layers=28,
                      num_attention_heads=16, num_key_value_heads=8, head_dim=128, rope_theta=1e6,
                      rms_norm_eps=1e-6, tie_word_embeddings=True, max_position_embeddings=40960)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg, torch_dtype=torch.bfloat16).cuda().eval()
    width = max(map(len, prompts))
    ids = torch.zeros(len(prompts), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):] = torch.tensor(p)
        mask[i, width - len(p):] = 1
    ids, mask = ids.cuda(), mask.cuda()
    with torch.no_grad():
        model.generate(ids[:2], attention_mask=mask[:2], max_new_tokens=4, do_sample=False)  # warm-up
        torch.cuda.synchronize()
        t0 = time.time()
        # One static batch: every row runs to the longest max_tokens; count only the tokens each request asked for.
        model.generate(ids, attention_mask=mask, max_new_tokens=max(max_tokens), min_new_tokens=max(max_tokens),
                       do_sample=True, temperature=0.6, top_k=0)
        torch.cuda.synchronize()
        wall = time.time() - t0
    hf = {"output_tokens_per_second": sum(max_tokens) / wall, "wall_s": wall}
    print(f"transformers static-batch generate: {hf['output_tokens_per_second']:.1f} out tok/s ({wall:.1f} s)")
    del model
    torch.cuda.empty_cache()
    hf_cb = transformers_continuous_batching(cfg, prompts, max(max_tokens))
    path = os.path.join(args.out, "peer_requests.txt")
    write_requests(path, prompts, max_tokens, 151936)
    ours = bench(args, "peer_ours", "--model", "qwen3-0.6b", "--requests-file", path, "--temperature", 0.6,
                 "--max-model-len", 2048)
    if ours:
        print(f"ours / transformers: {ours['output_tokens_per_second'] / hf['output_tokens_per_second']:.1f}x")
    return {"transformers_generate": hf, "transformers_generate_batch": hf_cb, "ours": ours}


def transformers_continuous_batching(cfg, prompts, max_new_tokens):
    """transformers' own continuous batching over a paged cache (`generate_batch`, where the installed version
    has it) on the same random-weight model and prompts; one output cap for all (its API takes one config), the
    generated tokens counted. Returns None, saying why, where it cannot run."""
    try:
        import torch
        from transformers import AutoModelForCausalLM
        from transformers.generation import GenerationConfig
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(cfg, torch_dtype=torch.bfloat16,
                                                 attn_implementation="sdpa_paged").cuda().eval()
        if not hasattr(model, "generate_batch"):
            raise RuntimeError("this transformers version has no generate_batch")
        gen = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=True, temperature=0.6, top_k=0,
                               eos_token_id=-1, pad_token_id=0)
        with torch.no_grad():
            model.generate_batch(inputs=[p[:16] for p in prompts[:4]],
                                 generation_config=GenerationConfig(max_new_tokens=4, eos_token_id=-1,
                                                                    pad_token_id=0), progress_bar=False)
            torch.cuda.synchronize()
            t0 = time.time()
            out = model.generate_batch(inputs=prompts, generation_config=gen, progress_bar=False)
            torch.cuda.synchronize()
            wall = time.time() - t0
        tokens = sum(len(o.generated_tokens) for o in out.values())
        del model
        torch.cuda.empty_cache()
    except Exception as e:  # an API this version lacks or spells otherwise: report, do not fail the run
        print(f"transformers generate_batch: skipped ({type(e).__name__}: {e})")
        return None
    r = {"output_tokens_per_second": tokens / wall, "wall_s": wall, "output_tokens": tokens}
    print(f"transformers continuous-batching generate_batch: {r['output_tokens_per_second']:.1f} out tok/s "
          f"({tokens} tokens, {wall:.1f} s)")
    return r


def plots(results, out_dir):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plots")
        return []
    rows = results.get("W2") or []
    files = []
    if rows:
        o0 = rows[0]["output_len"]
        fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
        for p in sorted({r["prompt_len"] for r in rows}):
            sel = sorted((r for r in rows if r["prompt_len"] == p and r["output_len"] == o0), key=lambda r: r["batch"])
            axes[0].plot([r["batch"] for r in sel], [r["output_tokens_per_second"] for r in sel], marker="o",
                         label=f"prompt {p}")
            axes[2].plot([r["max_concurrency"] for r in sel],
                         [(r["weight_bytes"] + r["kv_peak_bytes"]) / 2**30 for r in sel], marker="o",
                         label=f"paged, prompt {p}")
            # The traditional cache reserves max_model_len per admitted request: a server configured for 8K
            # contexts holds 8192 tokens of K/V for each, whatever its actual length.
            axes[2].plot([r["max_concurrency"] for r in sel],
                         [(r["weight_bytes"] + r["max_concurrency"] * 8192 * r["kv_bytes_per_token"]) / 2**30
                          for r in sel], marker="x", linestyle=":", label=f"contiguous 8K, prompt {p}")
        for b in sorted({r["batch"] for r in rows}):
            sel = sorted((r for r in rows if r["batch"] == b and r["output_len"] == o0), key=lambda r: r["prompt_len"])
            axes[1].plot([r["prompt_len"] for r in sel], [r["ttft_p50_ms"] for r in sel], marker="o", label=f"batch {b}")
        axes[0].set(xlabel="batch (concurrent requests)", ylabel="output tok/s", title="throughput vs batch size",
                    xscale="log")
        axes[1].set(xlabel="prompt length", ylabel="TTFT p50 (ms)", title="TTFT vs prompt length", xscale="log",
                    yscale="log")
        lens = sorted({r["prompt_len"] for r in rows})
        axes[1].set_xticks(lens, [str(v) for v in lens])
        axes[1].minorticks_off()
        axes[2].set(xlabel="concurrent requests", ylabel="GiB (weights + KV in use at peak)",
                    title="GPU memory vs concurrency")
        for a in axes:
            a.legend(fontsize=7)
            a.grid(alpha=0.3)
        fig.suptitle(f"{rows[0]['model']} on {results.get('gpu', '?')}, output {o0}")
        fig.tight_layout()
        path = os.path.join(out_dir, "engine_w2.png")
        fig.savefig(path, dpi=110)
        files.append(path)
    return files


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cli", default="build-gpu/tools/cli/pagedattn", help="the pagedattn command")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--model", default="llama-3.1-8b", help="W2 / W4 model")
    ap.add_argument("--small-model", default="qwen3-0.6b", help="W1 / graphs model")
    ap.add_argument("--only", default="W1,W2,W3,W4,graphs,peer")
    ap.add_argument("--w2-outputs", type=int, nargs="+", default=[64, 256])
    ap.add_argument("--w3-requests", type=int, default=16)
    ap.add_argument("--w3-13b", action="store_true", help="also Llama-2-13B at 32K (needs > 80 GB at 8 requests)")
    ap.add_argument("--w4-requests", type=int, default=1000)
    ap.add_argument("--kv-cache-gib", type=float, default=40.0, help="pool cap of W2 / W4 runs")
    ap.add_argument("--run-timeout", type=float, default=240)
    ap.add_argument("--quick", action="store_true", help="small sizes: a smoke run on any machine")
    ap.add_argument("--out", default="engine_results")
    args = ap.parse_args()
    if args.quick:
        args.model = args.small_model = "tiny-llama"
    os.makedirs(args.out, exist_ok=True)
    only = set(args.only.split(","))
    results = {"device": args.device}
    if args.device != "cpu":
        try:
            results["gpu"] = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                                            capture_output=True, text=True).stdout.strip()
        except OSError:
            pass
    steps = [("W1", w1), ("graphs", graphs_on_off), ("W2", w2), ("W3", w3), ("W4", w4), ("peer", transformers_peer)]
    for key, fn in steps:
        if key not in only or (key in ("graphs", "peer") and (args.quick or args.device == "cpu")):
            continue
        print(f"== {key}", flush=True)
        results[key] = fn(args)
        with open(os.path.join(args.out, "engine_summary.json"), "w") as f:
            json.dump(results, f, indent=1)
    print("results:", os.path.join(args.out, "engine_summary.json"), *plots(results, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
