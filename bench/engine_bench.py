"""The engine's serving benchmark (shared/ENGINE.md): W1 the nano-vllm workload, W2 the source documents' grid
(batch x prompt x output: throughput, TTFT, TPOT, end-to-end p50/p99, KV memory in use), W3 paged vs the
traditional contiguous cache at a long context (admitted concurrency and tok/s); JSON and PNG plots.

    python3 bench/engine_bench.py --model qwen3-0.6b --device cuda --out results/   # on the GPU machine
    python3 bench/engine_bench.py --model tiny-llama --device cpu --quick           # anywhere (a smoke run)

Timing: every request is submitted at t = 0 (offline); TTFT = first token - submission, TPOT = (E2E - TTFT) /
(tokens - 1), as vLLM defines them; throughput = output tokens / wall time of the whole run, prefill included.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import time

import pagedattn


def percentile(xs, p):
    if not xs:
        return 0.0
    xs = sorted(xs)
    at = p / 100 * (len(xs) - 1)
    lo = int(at)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (at - lo) * (xs[hi] - xs[lo])


def run(engine_kwargs, prompts, max_tokens, temperature=0.0):
    """All requests at t = 0 on a fresh engine; per-request TTFT / TPOT / E2E from the step outputs."""
    e = pagedattn._C.Engine(**engine_kwargs)
    t0 = time.perf_counter()
    ids = [e.add_request(p, temperature=temperature, max_tokens=m, ignore_eos=True, seed=i)
           for i, (p, m) in enumerate(zip(prompts, max_tokens))]
    first, last, count = {}, {}, {}
    peak_blocks = 0
    while e.has_unfinished():
        outs = e.step()
        now = time.perf_counter() - t0
        for rid, tokens, reason, detail in outs:
            if reason == "aborted":
                raise RuntimeError(f"request {rid} was refused: {detail}")
            first.setdefault(rid, now)
            last[rid] = now
            count[rid] = len(tokens)
        s = e.stats()
        peak_blocks = max(peak_blocks, s["num_blocks"] - s["free_blocks"])
    wall = time.perf_counter() - t0
    s = e.stats()
    ttft = [first[i] for i in ids]
    e2e = [last[i] for i in ids]
    tpot = [(last[i] - first[i]) / (count[i] - 1) for i in ids if count[i] > 1]
    out_tokens = sum(count.values())
    in_tokens = sum(len(p) for p in prompts)
    return {
        "requests": len(prompts), "wall_s": wall, "output_tok_s": out_tokens / wall,
        "total_tok_s": (in_tokens + out_tokens) / wall, "ttft_p50_ms": 1e3 * percentile(ttft, 50),
        "ttft_p99_ms": 1e3 * percentile(ttft, 99), "tpot_p50_ms": 1e3 * percentile(tpot, 50),
        "tpot_p99_ms": 1e3 * percentile(tpot, 99), "e2e_p50_ms": 1e3 * percentile(e2e, 50),
        "e2e_p99_ms": 1e3 * percentile(e2e, 99), "max_concurrency": s["max_running"],
        "preemptions": s["preemptions"], "kv_peak_bytes": peak_blocks * s["block_bytes"],
        "host_fraction": s["host_seconds"] / wall,
    }


def w1(args, base):
    """nano-vllm: random.seed(0); 256 prompts of randint(100, 1024) tokens in [0, 10000], then their
    max_tokens randint(100, 1024); temperature 0.6, ignore_eos; one warm-up first."""
    random.seed(0)
    n = 16 if args.quick else 256
    hi = 64 if args.quick else 1024
    prompts = [[random.randint(0, 10000) % base["vocab"] for _ in range(random.randint(100 if not args.quick else 8, hi))]
               for _ in range(n)]
    max_tokens = [random.randint(100 if not args.quick else 4, hi) for _ in range(n)]
    run(base["engine"], prompts[:2], [4, 4])  # warm-up
    r = run(base["engine"], prompts, max_tokens, temperature=0.6)
    r["throughput"] = sum(max_tokens) / r["wall_s"]
    return r


def w2(args, base):
    batches = [1, 8] if args.quick else [1, 8, 32, 64, 128, 256]
    prompt_lens = [16, 64] if args.quick else [128, 1024, 4096]
    output_lens = [8] if args.quick else [64, 256]
    rows = []
    rng = random.Random(1)
    for b in batches:
        for p in prompt_lens:
            for o in output_lens:
                prompts = [[rng.randrange(base["vocab"]) for _ in range(p)] for _ in range(b)]
                kw = dict(base["engine"], max_num_seqs=max(b, 1))
                r = run(kw, prompts, [o] * b)
                r.update(batch=b, prompt_len=p, output_len=o)
                rows.append(r)
                print(f"W2 batch {b:4d} prompt {p:5d} output {o:4d}: {r['output_tok_s']:9.1f} out tok/s, "
                      f"TTFT p50 {r['ttft_p50_ms']:8.1f} ms, TPOT p50 {r['tpot_p50_ms']:7.2f} ms, "
                      f"E2E p99 {r['e2e_p99_ms']:8.1f} ms, KV peak {r['kv_peak_bytes'] / 2**20:8.1f} MiB")
    return rows


def w3(args, base):
    """Paged vs contiguous (max_model_len reserved per request at admission) on the same pool and requests: a
    pool of half of what n requests of the full context would reserve, so the contiguous cache admits n / 2 at
    most and the paged one as many as their actual tokens allow."""
    ctx = 256 if args.quick else args.w3_context
    n = 8 if args.quick else 64
    pool_blocks = n * ctx // 2 // args.block_size
    rng = random.Random(2)
    prompts = [[rng.randrange(base["vocab"]) for _ in range(ctx // 2)] for _ in range(n)]
    out = {}
    for layout in ("paged", "contiguous"):
        kw = dict(base["engine"], kv_layout=layout, max_model_len=ctx, max_num_seqs=n, num_blocks=pool_blocks)
        out[layout] = run(kw, prompts, [ctx // 4] * n)
        print(f"W3 {layout:10s} context {ctx}: {out[layout]['output_tok_s']:9.1f} out tok/s, "
              f"concurrency {out[layout]['max_concurrency']}")
    return out


def plots(results, out_dir):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plots")
        return []
    rows = results.get("W2", [])
    files = []
    if rows:
        fig, axes = plt.subplots(1, 3, figsize=(15, 4))
        for p in sorted({r["prompt_len"] for r in rows}):
            sel = [r for r in rows if r["prompt_len"] == p and r["output_len"] == rows[0]["output_len"]]
            axes[0].plot([r["batch"] for r in sel], [r["output_tok_s"] for r in sel], marker="o", label=f"prompt {p}")
            axes[2].plot([r["max_concurrency"] for r in sel], [r["kv_peak_bytes"] / 2**20 for r in sel], marker="o",
                         label=f"prompt {p}")
        for b in sorted({r["batch"] for r in rows}):
            sel = [r for r in rows if r["batch"] == b and r["output_len"] == rows[0]["output_len"]]
            axes[1].plot([r["prompt_len"] for r in sel], [r["ttft_p50_ms"] for r in sel], marker="o", label=f"batch {b}")
        axes[0].set(xlabel="batch (concurrent requests)", ylabel="output tok/s", title="throughput vs batch size")
        axes[1].set(xlabel="prompt length", ylabel="TTFT p50 (ms)", title="TTFT vs prompt length")
        axes[2].set(xlabel="concurrent requests", ylabel="KV in use (MiB)", title="memory vs concurrency")
        for a in axes:
            a.legend()
            a.grid(alpha=0.3)
        fig.tight_layout()
        path = os.path.join(out_dir, "engine_w2.png")
        fig.savefig(path, dpi=110)
        files.append(path)
    return files


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny-llama")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--workload", default="all", choices=["W1", "W2", "W3", "all"])
    ap.add_argument("--block-size", type=int, default=16)
    ap.add_argument("--num-blocks", type=int, default=4096)
    ap.add_argument("--max-num-batched-tokens", type=int, default=8192)
    ap.add_argument("--w3-context", type=int, default=8192)
    ap.add_argument("--quick", action="store_true", help="small sizes: a smoke run on any machine")
    ap.add_argument("--out", default=".")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    probe = pagedattn._C.Engine(args.model, num_blocks=1)
    base = {"vocab": probe.vocab_size,
            "engine": dict(model=args.model, device=args.device, block_size=args.block_size,
                           num_blocks=args.num_blocks, max_num_batched_tokens=args.max_num_batched_tokens)}
    results = {"model": args.model, "device": args.device}
    if args.workload in ("W1", "all"):
        results["W1"] = w1(args, base)
        print(f"W1 (nano-vllm workload): {results['W1']['throughput']:.1f} tok/s over {results['W1']['wall_s']:.2f} s")
    if args.workload in ("W2", "all"):
        results["W2"] = w2(args, base)
    if args.workload in ("W3", "all"):
        results["W3"] = w3(args, base)
    path = os.path.join(args.out, f"engine_{args.model.replace('/', '_')}_{args.device.replace(':', '')}.json")
    with open(path, "w") as f:
        json.dump(results, f, indent=1)
    print("results:", path, *plots(results, args.out))


if __name__ == "__main__":
    main()
