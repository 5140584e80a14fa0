"""TurboQuant quality: attention-output relative error of each preset against attention over the unquantized
K/V (fp32, the CPU backend, so the figures hold on any machine), on (a) Gaussian K/V and (b) keys with a few
large-magnitude outlier channels, as real models have; plus the key quantizer's distortion on random unit
vectors against the specification's table.

    python3 bench/turboquant_quality.py [--head-dim 128] [--context 2048] [--seed 0]
"""

from __future__ import annotations

import argparse

import numpy as np

import pagedattn

SPEC_DISTORTION = {(128, 2): 0.1160, (128, 3): 0.0340, (128, 4): 0.00931}


def attention_error(rng, preset, d, context, outliers, num_q=32, num_kv=8, bs=16):
    blocks = context // bs
    k = rng.standard_normal((blocks, bs, num_kv, d)).astype(np.float32)
    v = rng.standard_normal((blocks, bs, num_kv, d)).astype(np.float32)
    if outliers:  # 4 channels per head 10x larger, the same channels for every token (as in real keys)
        chans = rng.choice(d, 4, replace=False)
        k[..., chans] *= 10.0
    q = rng.standard_normal((1, num_q, d)).astype(np.float32)
    if outliers:
        q[..., chans] *= 3.0
    tables = np.arange(blocks, dtype=np.int32)[None, :]
    lens = np.array([context], np.int32)
    qsl = np.array([0, 1], np.int32)
    want = pagedattn.attention(q, k, v, tables, lens, qsl)
    b = pagedattn.turboquant_bytes(preset, d)
    cache = pagedattn.PagedKVCache(
        np.zeros((blocks, bs, num_kv, b["key_codes"]), np.uint8),
        np.zeros((blocks, bs, num_kv, b["value_codes"]), np.uint8),
        k_meta=np.zeros((blocks, bs, num_kv), np.float16) if b["key_norm"] else None,
        v_meta=np.zeros((blocks, bs, num_kv, 2), np.float16), format=preset)
    cache.write(k.reshape(-1, num_kv, d), v.reshape(-1, num_kv, d), np.arange(context, dtype=np.int64))
    got = pagedattn.Plan(q, cache, tables, lens, qsl).run(q, cache)
    return float(np.linalg.norm(got - want) / np.linalg.norm(want)), b["total"]


def key_distortion(rng, d, bits, n=20000):
    """E |x - x~|² of the MSE quantizer on random unit vectors, through the library's write path: the
    tq_kXv4 caches store n' = 1 / |c[idx]| for a unit key, so dequantizing and dividing by that norm gives
    the codebook point."""
    x = rng.standard_normal((n, d)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    cb = np.array(pagedattn.turboquant_codebook(d, bits)["centroids"])
    rot = pagedattn.turboquant_rotation(d)
    signs = np.array(rot["signs"], np.float64)
    blk = rot["block"]
    # R x = H_blockdiag (s * x); H by Sylvester's construction, normalized.
    h = np.array([[1.0]])
    while h.shape[0] < blk:
        h = np.block([[h, h], [h, -h]])
    h /= np.sqrt(blk)
    y = (x * signs).reshape(n, d // blk, blk) @ h.T
    mids = np.array(pagedattn.turboquant_codebook(d, bits)["midpoints"])
    idx = np.searchsorted(mids, y.reshape(n, d), side="right")
    yq = cb[idx].reshape(n, d // blk, blk)
    xq = (yq @ h).reshape(n, d) * signs
    return float(np.mean(np.sum((x - xq) ** 2, axis=1)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--head-dim", type=int, default=128)
    ap.add_argument("--context", type=int, default=2048)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    d = args.head_dim
    print(f"attention output relative error vs unquantized K/V (1 query, 32/8 heads, D {d}, context {args.context})")
    print(f"{'preset':10} {'bytes/token/head':>17} {'gaussian':>10} {'outlier K':>10}")
    for preset in pagedattn.TURBOQUANT_PRESETS:
        g, total = attention_error(rng, preset, d, args.context, outliers=False)
        o, _ = attention_error(rng, preset, d, args.context, outliers=True)
        print(f"{preset:10} {total:17d} {g:10.4f} {o:10.4f}")
    print(f"key distortion on 20000 random unit vectors, D {d} (specification's table in brackets)")
    for bits in (2, 3, 4):
        spec = SPEC_DISTORTION.get((d, bits))
        got = key_distortion(rng, d, bits)
        print(f"  {bits} bits: {got:.5f}" + (f"  [{spec}]  {100 * (got / spec - 1):+.2f}%" if spec else ""))


if __name__ == "__main__":
    main()
