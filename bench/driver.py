"""One benchmark driver: pagedattn (paged KV) against PyTorch SDPA (cuDNN, flash) on a contiguous cache and compiled
FlexAttention, plus the device ceilings (copy bandwidth, bf16 matmul), all in the same run.

Method: every implementation's output is checked against a float32 reference before it is timed; each timed call is
replayed from a CUDA graph over a rotation of input sets that together exceed 4x L2; the figure is the median over
repeats of (graph time / calls). Output: a table, JSON and PNG plots.

    python3 bench/driver.py [--short] [--out DIR] [--only decode,prefill,mixed,spot,select] [--peers cudnn,flash,flex]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

import pagedattn

DEV = "cuda"
DT = torch.bfloat16
HQ, HKV, D, BS = 32, 8, 128, 16


# ---- timing -----------------------------------------------------------------------------------------------------------

def graph_time(calls, repeats=15, warmup=2):
    """Median seconds per call: `calls` (a list of thunks) captured into one CUDA graph and replayed."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for fn in calls[:2]:
            fn()  # warm-up outside capture (compilation, lazy init)
    torch.cuda.current_stream().wait_stream(stream)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for fn in calls:
            fn()
    for _ in range(warmup):
        graph.replay()
    times = []
    for _ in range(repeats):
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop) * 1e-3 / len(calls))
    return statistics.median(times)


def sets_needed(bytes_per_set, l2_bytes):
    """How many input sets rotate so that together they exceed 4x L2."""
    return max(1, math.ceil(4 * l2_bytes / max(bytes_per_set, 1)))


# ---- ceilings ---------------------------------------------------------------------------------------------------------

def measure_ceilings():
    n = 1 << 30  # 1 GiB each way
    src = torch.empty(n, dtype=torch.uint8, device=DEV).random_()
    dst = torch.empty_like(src)
    copy = graph_time([lambda: dst.copy_(src)], repeats=10)
    a = torch.randn(8192, 8192, dtype=DT, device=DEV)
    b = torch.randn(8192, 8192, dtype=DT, device=DEV)
    mm = graph_time([lambda: torch.mm(a, b)], repeats=10)
    del src, dst
    return {"copy_tbps": 2 * n / copy / 1e12, "matmul_tflops": 2 * 8192 ** 3 / mm / 1e12}


# ---- problems ---------------------------------------------------------------------------------------------------------

class Paged:
    """One input set: a contiguous cache (for the peers) and the same data in a paged pool with shuffled blocks."""

    def __init__(self, seq_lens, query_lens, hq=HQ, hkv=HKV, d=D, bs=BS, layout="NHD"):
        kv_dtype = KV_DTYPE[0]
        self.kv_dtype = kv_dtype
        self.seq_lens, self.query_lens = seq_lens, query_lens
        self.hq, self.hkv, self.d, self.bs = hq, hkv, d, bs
        nblk = [(s + bs - 1) // bs for s in seq_lens]
        total = sum(nblk)
        perm = torch.randperm(total, device=DEV, dtype=torch.int32)
        self.block_tables = torch.zeros(len(seq_lens), max(nblk), dtype=torch.int32, device=DEV)
        if layout == "HND":  # [blocks, heads, tokens, d] in memory, passed as the same logical view with strides
            self.k_pool = torch.empty(total, hkv, bs, d, dtype=DT, device=DEV).transpose(1, 2)
            self.v_pool = torch.empty(total, hkv, bs, d, dtype=DT, device=DEV).transpose(1, 2)
        else:
            self.k_pool = torch.empty(total, bs, hkv, d, dtype=DT, device=DEV)
            self.v_pool = torch.empty_like(self.k_pool)
        # The contiguous cache the peers read, [batch, hkv, max_len, d], built once and shared by all of them.
        width = max(nblk) * bs
        self.k = torch.randn(len(seq_lens), hkv, width, d, dtype=DT, device=DEV)
        self.v = torch.randn_like(self.k)
        # A quantized cache: the pools hold codes (and int8 its per-token scales); the peers and the reference
        # read the same values dequantized into the contiguous bf16 cache.
        codes = {}
        if kv_dtype in ("fp8_e4m3", "fp8_e5m2"):
            fp8 = torch.float8_e4m3fn if kv_dtype == "fp8_e4m3" else torch.float8_e5m2
            for name in ("k", "v"):
                codes[name] = getattr(self, name).to(fp8)
                setattr(self, name, codes[name].to(DT))
        elif kv_dtype == "int8":
            self.scale_k, self.scale_v = [torch.empty(len(seq_lens), hkv, width, device=DEV) for _ in range(2)]
            for name in ("k", "v"):
                x_all = getattr(self, name)
                codes[name] = torch.empty(x_all.shape, dtype=torch.int8, device=DEV)
                for i in range(len(seq_lens)):  # one sequence at a time: float32 copies of the whole cache
                    x = x_all[i].float()           # would not fit beside it at 256 x 32768
                    scale = x.abs().amax(-1) / 127
                    codes[name][i] = torch.round(x / scale[..., None]).clamp(-127, 127).to(torch.int8)
                    getattr(self, f"scale_{name}")[i] = scale
                    x_all[i] = (codes[name][i].float() * scale[..., None]).to(DT)
        pool_dtype = codes["k"].dtype if codes else DT
        self.k_pool = self.k_pool.to(pool_dtype) if codes else self.k_pool
        self.v_pool = self.v_pool.to(pool_dtype) if codes else self.v_pool
        self.scales = {}
        if kv_dtype == "int8":
            self.scales = {"k_meta": torch.empty(total, bs, hkv, device=DEV),
                           "v_meta": torch.empty(total, bs, hkv, device=DEV)}
        at = 0
        for i, s in enumerate(seq_lens):
            ids = perm[at:at + nblk[i]]
            at += nblk[i]
            self.block_tables[i, :nblk[i]] = ids
            span = nblk[i] * bs
            src_k = codes["k"][i] if codes else self.k[i]
            src_v = codes["v"][i] if codes else self.v[i]
            self.k_pool[ids.long()] = src_k[:, :span].reshape(hkv, nblk[i], bs, d).permute(1, 2, 0, 3)
            self.v_pool[ids.long()] = src_v[:, :span].reshape(hkv, nblk[i], bs, d).permute(1, 2, 0, 3)
            if kv_dtype == "int8":
                self.scales["k_meta"][ids.long()] = self.scale_k[i, :, :span].reshape(hkv, nblk[i], bs).permute(1, 2, 0)
                self.scales["v_meta"][ids.long()] = self.scale_v[i, :, :span].reshape(hkv, nblk[i], bs).permute(1, 2, 0)
        self.seq_lens_t = torch.tensor(seq_lens, dtype=torch.int32, device=DEV)
        self.qsl = torch.tensor([0] + list(torch.tensor(query_lens).cumsum(0)), dtype=torch.int32, device=DEV)
        self.q = torch.randn(int(sum(query_lens)), hq, d, dtype=DT, device=DEV)
        self.out = torch.empty_like(self.q)
        self.hints = dict(max_query_len=max(query_lens), max_seq_len=max(seq_lens))

    def nbytes(self):
        """Bytes an ideal kernel moves: the cache as stored (codes and scales), q and out."""
        per_elem = 2 if self.kv_dtype == "bf16" else 1
        meta = 4 if self.kv_dtype == "int8" else 0
        kv = sum(2 * s * self.hkv * (self.d * per_elem + meta) for s in self.seq_lens)
        return kv + 2 * self.q.numel() * 2

    def flops(self):
        f = 0
        for s, q in zip(self.seq_lens, self.query_lens):
            f += 4 * (q * (s - q) + q * (q + 1) / 2) * self.hq * self.d
        return f

    def ours(self, workspace, force_segments=0):
        return lambda: pagedattn.attention(self.q, self.k_pool, self.v_pool, self.block_tables, self.seq_lens_t,
                                           self.qsl, self.out, workspace=workspace, validate=False,
                                           force_segments=force_segments, **self.hints, **self.scales)

    def workspace(self, force_segments=0):
        size = pagedattn.attention_workspace_size(self.q, self.k_pool, self.v_pool, self.block_tables,
                                                  self.seq_lens_t, self.qsl, force_segments=force_segments,
                                                  **self.hints, **self.scales)
        return torch.empty(max(size, 16), dtype=torch.uint8, device=DEV)

    def reference(self, i, rows=None):
        """float32 attention of sequence i's queries (rows of self.q), or of the query indices `rows` of it."""
        q0, q1 = int(self.qsl[i]), int(self.qsl[i + 1])
        s = self.seq_lens[i]
        rows = torch.arange(q1 - q0, device=DEV) if rows is None else rows
        q = self.q[q0:q1][rows].float().transpose(0, 1)                  # [hq, rows, d]
        k = self.k[i, :, :s].float().repeat_interleave(self.hq // self.hkv, 0)  # [hq, s, d]
        v = self.v[i, :, :s].float().repeat_interleave(self.hq // self.hkv, 0)
        x = q @ k.transpose(1, 2) / math.sqrt(self.d)
        qpos = s - (q1 - q0) + rows
        x = x.masked_fill(torch.arange(s, device=DEV)[None, :] > qpos[:, None], float("-inf"))
        return (torch.softmax(x, -1) @ v).transpose(0, 1)               # [ql, hq, d]


def rel_err(got, want):
    return float((got.float() - want).norm() / want.norm())


def check_rows(p, out, seqs=(0,)):
    """Max relative error over the first and last 128 query rows of the given sequences (bounded memory)."""
    errs = []
    for i in seqs:
        ql = p.query_lens[i]
        if not ql:
            continue
        rows = torch.unique(torch.cat([torch.arange(min(ql, 128)), torch.arange(max(0, ql - 128), ql)])).to(DEV)
        errs.append(rel_err(out[int(p.qsl[i]):int(p.qsl[i + 1])][rows], p.reference(i, rows)))
    return max(errs) if errs else 0.0


# ---- peers on a contiguous cache ----------------------------------------------------------------------------------------

def sdpa_decode_inputs(p):
    """Views of the shared contiguous cache: q [b, hq, 1, d], k/v [b, hkv, s, d] (equal lengths in the grid)."""
    b, s = len(p.seq_lens), p.seq_lens[0]
    return p.q.view(b, 1, p.hq, p.d).transpose(1, 2), p.k[:, :, :s], p.v[:, :, :s]


def sdpa_prefill_inputs(p):
    b, s = len(p.seq_lens), p.seq_lens[0]
    return p.q.view(b, s, p.hq, p.d).transpose(1, 2), p.k[:, :, :s], p.v[:, :, :s]


def sdpa_call(backend, q, k, v, causal, out_box):
    def fn():
        with sdpa_kernel(backend):
            out_box[0] = F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=True)
    return fn


_flex = None


def flex_call(q, k, v, causal, out_box):
    global _flex
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention
    if _flex is None:
        _flex = torch.compile(flex_attention, dynamic=False)
    mask = None
    if causal:
        mask = create_block_mask(lambda b, h, qi, ki: qi >= ki, None, None, q.shape[2], k.shape[2], device=DEV)

    def fn():
        out_box[0] = _flex(q, k, v, block_mask=mask, enable_gqa=True)
    return fn


def to_rows(o, p):
    """[b, hq, ql, d] -> [b*ql, hq, d] in pagedattn's row order."""
    return o.transpose(1, 2).reshape(-1, p.hq, p.d)


# ---- workloads --------------------------------------------------------------------------------------------------------

PEERS = ["cudnn", "flash", "flex"]
KV_DTYPE = ["bf16"]  # --kv-dtype: the format of our paged cache


def run_points(kind, points, l2, results, short):
    for label, seq_lens, query_lens, causal, *shape in points:
        shape = shape[0] if shape else {}  # spot checks: other head dims / head counts
        base = Paged(seq_lens, query_lens, **shape)
        n_sets = min(sets_needed(base.nbytes(), l2), 128)
        sets = [base] + [Paged(seq_lens, query_lens, **shape) for _ in range(n_sets - 1)]
        row = {"op": kind, "workload": label, "bytes": base.nbytes(), "flops": base.flops(), "sets": n_sets}
        # pagedattn, with the reference check first
        ws = [p.workspace() for p in sets]
        base.ours(ws[0])()
        err = check_rows(base, base.out, seqs=range(min(2, len(seq_lens))))
        row["pagedattn_err"] = err
        row["pagedattn_s"] = graph_time([p.ours(w) for p, w in zip(sets, ws)]) if err < 2e-2 else None
        # peers on a contiguous cache
        inputs = sdpa_decode_inputs if kind == "decode" else sdpa_prefill_inputs
        peers = {"cudnn": lambda i, box: sdpa_call(SDPBackend.CUDNN_ATTENTION, *i, causal, box),
                 "flash": lambda i, box: sdpa_call(SDPBackend.FLASH_ATTENTION, *i, causal, box),
                 "flex": lambda i, box: flex_call(*i, causal, box)}
        if shape or (short and kind == "decode" and label not in ("1x4096", "16x4096", "64x4096")):
            peers.pop("flex")  # one compilation per shape: the short mode compiles it for three decode points
        peers = {k: v for k, v in peers.items() if k in PEERS}
        for name, make in peers.items():
            try:
                boxes = [[None] for _ in sets]
                calls = [make(inputs(p), box) for p, box in zip(sets, boxes)]
                calls[0]()
                peer_err = check_rows(base, to_rows(boxes[0][0], base), seqs=range(min(2, len(seq_lens))))
                row[f"{name}_err"] = peer_err
                row[f"{name}_s"] = graph_time(calls) if peer_err < 2e-2 else None
            except Exception as e:  # a peer that cannot run this shape is reported, not fatal
                row[f"{name}_s"] = None
                row[f"{name}_error"] = f"{type(e).__name__}: {str(e)[:120]}"
        results.append(row)
        print_row(row)
        del sets, ws
        torch.cuda.empty_cache()


def run_mixed(l2, results):
    chunks, chunk, cached, decodes, ctx = 4, 512, 2048, 64, 4096
    seq_lens = [cached + chunk] * chunks + [ctx] * decodes
    query_lens = [chunk] * chunks + [1] * decodes
    base = Paged(seq_lens, query_lens)
    n_sets = min(sets_needed(base.nbytes(), l2), 16)
    sets = [base] + [Paged(seq_lens, query_lens) for _ in range(n_sets - 1)]
    ws = [p.workspace() for p in sets]
    base.ours(ws[0])()
    err = max(check_rows(base, base.out, seqs=[0]), check_rows(base, base.out, seqs=[chunks]))
    row = {"op": "mixed", "workload": f"{chunks}x{chunk}@{cached}+{decodes}x1@{ctx}", "bytes": base.nbytes(),
           "flops": base.flops(), "sets": n_sets, "pagedattn_err": err,
           "pagedattn_s": graph_time([p.ours(w) for p, w in zip(sets, ws)]) if err < 2e-2 else None}
    results.append(row)
    print_row(row)


def run_selection(l2, results, points):
    """For each decode point: our chosen launch against every forced segment count."""
    for label, seq_lens, query_lens, _ in points:
        base = Paged(seq_lens, query_lens)
        n_sets = min(sets_needed(base.nbytes(), l2), 32)
        sets = [base] + [Paged(seq_lens, query_lens) for _ in range(n_sets - 1)]
        times = {}
        # The first configuration timed for a point read up to 12% slow (64x512: the same one-segment launch at
        # 65.7 us as "chosen", then 58.5 us forced): a discarded warm-up pass levels the start.
        graph_time([p.ours(p.workspace()) for p in sets], repeats=3)
        for forced in [0, 1, 2, 4, 8, 16, 32, 64]:
            ws = [p.workspace(forced) for p in sets]
            times[forced] = graph_time([p.ours(w, forced) for p, w in zip(sets, ws)], repeats=9)
        best = min(v for k, v in times.items() if k)
        row = {"op": "select", "workload": label, "chosen_s": times[0], "best_forced_s": best,
               "best_segments": min((v, k) for k, v in times.items() if k)[1], "ratio": times[0] / best,
               "forced": {str(k): v for k, v in times.items()}}
        results.append(row)
        print(f"select {label:>10}: chosen {times[0]*1e6:8.1f} us, best forced {best*1e6:8.1f} us "
              f"({row['best_segments']} segments), ratio {row['ratio']:.3f}", flush=True)
        del sets
        torch.cuda.empty_cache()


CEIL = {}


def print_row(r):
    def us(k):
        v = r.get(k)
        return f"{v*1e6:9.1f}" if v else "      n/a"
    ours = r.get("pagedattn_s")
    extra = ""
    if ours:
        if r["op"] in ("decode", "mixed"):
            tbps = r["bytes"] / ours / 1e12
            extra = f"{tbps:6.2f} TB/s {100*tbps/CEIL['copy_tbps']:5.1f}% copy"
        else:
            tf = r["flops"] / ours / 1e12
            extra = f"{tf:7.1f} TFLOP/s {100*tf/CEIL['matmul_tflops']:5.1f}% mm"
    cud = r.get("cudnn_s")
    ratio = f"x{ours/cud:5.2f} cudnn" if ours and cud else ""
    print(f"{r['op']:>7} {r['workload']:>22} ours {us('pagedattn_s')} cudnn {us('cudnn_s')} flash {us('flash_s')} "
          f"flex {us('flex_s')} us  {extra} {ratio}", flush=True)


def plot(results, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(15, 5))

    def panel(ax, op, amount, ceiling, ceiling_label, ylabel, title):
        """Grouped bars of amount / time (1e12 units) per implementation for the rows of one op."""
        rows = [r for r in results if r["op"] == op]
        for j, name in enumerate(["pagedattn", "cudnn", "flash", "flex"]):
            xs = [i + 0.2 * j for i in range(len(rows))]
            ys = [r[amount] / r[f"{name}_s"] / 1e12 if r.get(f"{name}_s") else 0 for r in rows]
            ax.bar(xs, ys, width=0.2, label=name)
        ax.axhline(ceiling, color="k", ls="--", label=ceiling_label)
        ax.set_xticks(range(len(rows)), [r["workload"] for r in rows], rotation=45, ha="right")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.legend()

    panel(axes[0], "decode", "bytes", CEIL["copy_tbps"], "copy ceiling", "TB/s (K+V+q+out bytes / time)",
          "decode: achieved bandwidth")
    panel(axes[1], "prefill", "flops", CEIL["matmul_tflops"], "bf16 matmul", "TFLOP/s (causal)", "prefill")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--short", action="store_true", help="fewer points (for scripts/gpu-check.sh)")
    ap.add_argument("--out", default=os.environ.get("OUT", "bench-out"))
    ap.add_argument("--only", default="decode,prefill,mixed,spot,select")
    ap.add_argument("--peers", default=",".join(PEERS), help="peers timed beside ours ('none': ours only)")
    ap.add_argument("--kv-dtype", default="bf16", choices=["bf16", "fp8_e4m3", "fp8_e5m2", "int8"],
                    help="our cache format (the peers read the same values, dequantized, from a bf16 cache)")
    args = ap.parse_args()
    KV_DTYPE[0] = args.kv_dtype
    PEERS[:] = [p for p in args.peers.split(",") if p in PEERS]
    os.makedirs(args.out, exist_ok=True)
    only = set(args.only.split(","))
    torch.manual_seed(int(time.time()))
    prop = torch.cuda.get_device_properties(0)
    l2 = prop.L2_cache_size
    CEIL.update(measure_ceilings())
    print(f"device {prop.name}, {prop.multi_processor_count} SMs, L2 {l2 >> 20} MiB; copy {CEIL['copy_tbps']:.2f} TB/s,"
          f" bf16 matmul {CEIL['matmul_tflops']:.0f} TFLOP/s", flush=True)
    batches = [1, 16, 64, 256]
    contexts = [512, 4096, 32768]
    decode = [(f"{b}x{c}", [c] * b, [1] * b, False) for b in batches for c in contexts]
    prefill = [(f"{b}x{s}", [s] * b, [s] * b, True) for b, s in [(16, 1024), (4, 4096), (1, 16384)]]
    results = []
    if "decode" in only:
        run_points("decode", decode, l2, results, args.short)
    if "prefill" in only:
        run_points("prefill", prefill, l2, results, args.short)
    if "mixed" in only:
        run_mixed(l2, results)
    # Spot checks, one decode and one prefill point each: head dim 64, 192 and 256, GQA 1 and 8, the HND pool
    # layout, and 128-token pages (NHD and HND: whether longer contiguous runs per page close decode's gap to
    # cuDNN).
    if "spot" in only:
        for tag, shape in [("d64", {"d": 64}), ("d192", {"d": 192}), ("d256", {"d": 256}),
                           ("gqa1", {"hq": 32, "hkv": 32}), ("gqa8", {"hq": 64, "hkv": 8}), ("hnd", {"layout": "HND"}),
                           ("bs128", {"bs": 128}), ("bs128 hnd", {"bs": 128, "layout": "HND"})]:
            run_points("decode", [(f"16x4096 {tag}", [4096] * 16, [1] * 16, False, shape)], l2, results, args.short)
            run_points("prefill", [(f"4x4096 {tag}", [4096] * 4, [4096] * 4, True, shape)], l2, results, args.short)
    if "select" in only:
        run_selection(l2, results, decode)
    suffix = "" if args.kv_dtype == "bf16" else f"_{args.kv_dtype}"
    with open(os.path.join(args.out, f"bench_results{suffix}.json"), "w") as f:
        json.dump({"device": prop.name, "kv_dtype": args.kv_dtype, "ceilings": CEIL, "results": results}, f,
                  indent=1)
    if any(r["op"] in ("decode", "prefill") for r in results):
        plot(results, os.path.join(args.out, f"bench_plot{suffix}.png"))


if __name__ == "__main__":
    main()
