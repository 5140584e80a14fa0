"""Random paged-attention problems and an independent float64 reference, for the pytest suites."""

from __future__ import annotations

import math

import numpy as np


def make_batch(rng, kind, num_seqs, max_len):
    """(seq_lens, query_lens) for a batch of the given kind: decode, prefill, chunked or mixed."""
    seq_lens, query_lens = [], []
    for _ in range(num_seqs):
        k = kind if kind != "mixed" else rng.choice(["decode", "prefill", "chunked", "empty_query", "single"])
        if k == "decode":
            s = int(rng.integers(1, max_len + 1)); q = 1
        elif k == "prefill":
            s = q = int(rng.integers(1, max_len + 1))
        elif k == "chunked":
            s = int(rng.integers(2, max_len + 1)); q = int(rng.integers(1, s))
        elif k == "empty_query":
            s = int(rng.integers(0, max_len + 1)); q = 0
        else:
            s = q = 1
        seq_lens.append(s)
        query_lens.append(q)
    return seq_lens, query_lens


def make_problem(rng, *, head_dim, num_q_heads, num_kv_heads, block_size, seq_lens, query_lens, hnd=False,
                 np_dtype=np.float32, extra_blocks=3):
    """Float64 master copies plus the paged layout: shuffled block ids, K/V pools, query rows."""
    blocks_per_seq = [(s + block_size - 1) // block_size for s in seq_lens]
    num_blocks = sum(blocks_per_seq) + extra_blocks
    max_blocks = max(blocks_per_seq + [1]) + 1
    ids = rng.permutation(num_blocks).astype(np.int32)
    block_tables = np.full((len(seq_lens), max_blocks), -7, dtype=np.int32)
    nxt = 0
    for i, nb in enumerate(blocks_per_seq):
        block_tables[i, :nb] = ids[nxt:nxt + nb]
        nxt += nb
    shape = (num_blocks, block_size, num_kv_heads, head_dim)
    k = rng.uniform(-2, 2, shape).astype(np_dtype)
    v = rng.uniform(-2, 2, shape).astype(np_dtype)
    if hnd:  # same logical view, physically [num_blocks, num_kv_heads, block_size, head_dim]
        k = np.ascontiguousarray(k.transpose(0, 2, 1, 3)).transpose(0, 2, 1, 3)
        v = np.ascontiguousarray(v.transpose(0, 2, 1, 3)).transpose(0, 2, 1, 3)
    qsl = np.concatenate([[0], np.cumsum(query_lens)]).astype(np.int32)
    q = rng.uniform(-2, 2, (int(qsl[-1]), num_q_heads, head_dim)).astype(np_dtype)
    return dict(q=q, k=k, v=v, block_tables=block_tables, seq_lens=np.array(seq_lens, dtype=np.int32),
                query_start_loc=qsl, max_query_len=max(query_lens + [0]), max_seq_len=max(seq_lens + [0]))


def reference(p, *, scale=0.0, window_left=0, softcap=0.0, alibi_slopes=None, sinks=None):
    """Dense float64 attention: explicit masks over each sequence's gathered keys. Returns (out, lse)."""
    q = np.asarray(p["q"], dtype=np.float64)
    k = np.asarray(p["k"], dtype=np.float64)
    v = np.asarray(p["v"], dtype=np.float64)
    num_tokens, hq, d = q.shape
    bs, hkv = k.shape[1], k.shape[2]
    group = hq // hkv
    scale = scale or 1.0 / math.sqrt(d)
    out = np.zeros((num_tokens, hq, d))
    lse = np.zeros((num_tokens, hq))
    for i, s in enumerate(p["seq_lens"]):
        s = int(s)
        q0, q1 = int(p["query_start_loc"][i]), int(p["query_start_loc"][i + 1])
        if q1 == q0:
            continue
        pos = np.arange(s)
        blocks = p["block_tables"][i][pos // bs]
        keys = k[blocks, pos % bs]      # [s, hkv, d]
        values = v[blocks, pos % bs]
        for t in range(q1 - q0):
            qpos = s - (q1 - q0) + t
            visible = pos <= qpos
            if window_left:
                visible &= qpos - pos <= window_left
            for h in range(hq):
                x = keys[:, h // group] @ q[q0 + t, h] * scale
                if softcap:
                    x = softcap * np.tanh(x / softcap)
                if alibi_slopes is not None:
                    x = x + float(alibi_slopes[h]) * (pos - qpos)
                x = np.where(visible, x, -np.inf)
                m = x.max()
                if sinks is not None:
                    m = max(m, float(sinks[h]))
                w = np.exp(x - m)
                denom = w.sum() + (math.exp(float(sinks[h]) - m) if sinks is not None else 0.0)
                out[q0 + t, h] = (w @ values[:, h // group]) / denom
                lse[q0 + t, h] = m + math.log(denom)
    return out, lse


def rel_error(got, want):
    got = np.asarray(got, dtype=np.float64)
    return float(np.linalg.norm(got - want) / max(np.linalg.norm(want), 1e-300))


def rounding_error(want, np_dtype):
    """The error of rounding the exact result once to np_dtype: the scale of the tolerance."""
    return rel_error(np.asarray(want).astype(np_dtype), want)
