"""Quantized K/V caches through the Python API on torch tensors: write_kv quantizes (fp8 with per-tensor or
per-head scales, int8 with its per-token scale planes), attention reads the stored codes directly. Checked
against a float32 torch reference over the dequantized cache, on the CPU and (where present) on the GPU, and the
two backends against each other."""

import math

import pytest

torch = pytest.importorskip("torch")

import pagedattn  # noqa: E402

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
FORMATS = {"fp8_e4m3": torch.float8_e4m3fn, "fp8_e5m2": torch.float8_e5m2, "int8": torch.int8}


def make_cache(device, fmt, *, num_blocks, block_size, hkv, d, head_scales):
    shape = (num_blocks, block_size, hkv, d)
    k = torch.zeros(shape, dtype=FORMATS[fmt], device=device) if fmt != "int8" else torch.zeros(
        shape, dtype=torch.int8, device=device)
    v = torch.zeros_like(k)
    extra = {}
    if fmt == "int8":
        extra["k_meta"] = torch.zeros(shape[:3], dtype=torch.float32, device=device)
        extra["v_meta"] = torch.zeros(shape[:3], dtype=torch.float32, device=device)
    else:
        n = hkv if head_scales else 1
        extra["k_scale"] = torch.rand(n, device=device) * 0.5 + 0.25
        extra["v_scale"] = torch.rand(n, device=device) * 0.5 + 0.25
    return k, v, extra


def dequantized(pool, fmt, scale=None, meta=None):
    x = pool.float()
    if fmt == "int8":
        return x * meta[..., None]
    if scale is not None:
        x = x * (scale[None, None, :, None] if scale.numel() > 1 else scale)
    return x


def reference(q, k, v, block_tables, seq_lens, qsl):
    """float32 causal attention per sequence over dequantized pools [num_blocks, bs, hkv, d]."""
    hq, d = q.shape[1], q.shape[2]
    bs, hkv = k.shape[1], k.shape[2]
    group = hq // hkv
    out = torch.zeros(q.shape, dtype=torch.float32, device=q.device)
    for i, s in enumerate(seq_lens.tolist()):
        q0, q1 = qsl[i].item(), qsl[i + 1].item()
        if q1 == q0:
            continue
        pos = torch.arange(s, device=q.device)
        blocks = block_tables[i][pos // bs].long()
        keys = k[blocks, pos % bs].repeat_interleave(group, dim=1)
        values = v[blocks, pos % bs].repeat_interleave(group, dim=1)
        qpos = torch.arange(s - (q1 - q0), s, device=q.device)
        x = torch.einsum("thd,shd->hts", q[q0:q1].float(), keys) / math.sqrt(d)
        x = x.masked_fill(~(pos[None, :] <= qpos[:, None]), float("-inf"))
        out[q0:q1] = torch.einsum("hts,shd->thd", torch.softmax(x, dim=-1), values)
    return out


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("fmt", list(FORMATS))
@pytest.mark.parametrize("head_scales", [False, True])
def test_write_then_attend(device, fmt, head_scales):
    if fmt == "int8" and head_scales:
        pytest.skip("int8 has per-token scales only")
    gen = torch.Generator().manual_seed(hash((device, fmt, head_scales)) % 2**31)
    d, hq, hkv, bs = 128, 8, 2, 16
    if device == "cuda" and ("bf16", fmt, d) not in pagedattn.info()["cuda_instances"]:
        pytest.skip(f"bf16 x {fmt} x {d} not compiled in this build")
    seq_lens = torch.tensor([37, 1, 80, 16], dtype=torch.int32)
    query_lens = torch.tensor([1, 1, 80, 5], dtype=torch.int32)
    blocks_per_seq = [(s + bs - 1) // bs for s in seq_lens.tolist()]
    num_blocks = sum(blocks_per_seq) + 3
    ids = torch.randperm(num_blocks, generator=gen).to(torch.int32)
    block_tables = torch.full((len(blocks_per_seq), max(blocks_per_seq) + 1), -7, dtype=torch.int32)
    slots, nxt = [], 0
    for i, nb in enumerate(blocks_per_seq):
        block_tables[i, :nb] = ids[nxt:nxt + nb]
        nxt += nb
        for p in range(seq_lens[i].item()):
            slots.append(block_tables[i, p // bs].item() * bs + p % bs)
    slots = torch.tensor(slots, dtype=torch.int64)
    tokens = slots.numel()
    key = (torch.randn(tokens, hkv, d, generator=gen) * 2).to(torch.bfloat16)
    value = torch.randn(tokens, hkv, d, generator=gen).to(torch.bfloat16)
    qsl = torch.cat([torch.zeros(1, dtype=torch.int32), torch.cumsum(query_lens, 0).to(torch.int32)])
    q = torch.randn(int(qsl[-1]), hq, d, generator=gen).to(torch.bfloat16)

    k, v, extra = make_cache(device, fmt, num_blocks=num_blocks, block_size=bs, hkv=hkv, d=d,
                             head_scales=head_scales)
    dev = lambda t: t.to(device)  # noqa: E731
    pagedattn.write_kv(dev(key), dev(value), dev(slots), k, v, **extra)
    kd = dequantized(k, fmt, extra.get("k_scale"), extra.get("k_meta"))
    vd = dequantized(v, fmt, extra.get("v_scale"), extra.get("v_meta"))
    # Round trip: every written row decodes to its source within half the format's step: relative for normal
    # codes (e4m3: 2^-4, e5m2: 2^-3), absolute below them, where the subnormal step is fixed (e4m3: 2^-9,
    # e5m2: 2^-16, times the head's scale); int8: half a code of absmax / 127.
    blocks, offs = slots // bs, slots % bs
    got_k = kd[dev(blocks), dev(offs)].cpu()
    if fmt == "int8":
        bound = key.float().abs().amax(-1, keepdim=True) / 254
    else:
        rel, sub = {"fp8_e4m3": (2**-4, 2**-10), "fp8_e5m2": (2**-3, 2**-17)}[fmt]
        scale = extra["k_scale"].cpu()
        scale = scale[None, :, None] if scale.numel() > 1 else scale
        bound = torch.maximum(key.float().abs() * rel, scale * sub)
    assert ((got_k - key.float()).abs() <= bound + 1e-6).all()

    out = pagedattn.attention(dev(q), k, v, dev(block_tables), dev(seq_lens), dev(qsl), **extra)
    ref = reference(dev(q), kd, vd, dev(block_tables), dev(seq_lens), dev(qsl))
    err = ((out.float() - ref).norm() / ref.norm()).item()
    assert err < 1e-2, f"relative error {err}"
