"""The CPU backend through the Python package: numpy (and torch when installed) against the float64 reference."""

import itertools

import numpy as np
import pytest

import pagedattn
from reference import make_batch, make_problem, reference, rel_error, rounding_error

HEAD_DIMS = pagedattn.info()["supported_head_dims"]  # the library's one list
GROUPS = [1, 2, 4, 5, 6, 8]
BLOCK_SIZES = [1, 3, 16, 32, 256]
KINDS = ["decode", "prefill", "chunked", "mixed"]
VARIANTS = [{}, {"window_left": 13}, {"softcap": 8.0, "scale": 0.3}, {"alibi": True}, {"sinks": True},
            {"window_left": 9, "softcap": 20.0, "alibi": True, "sinks": True}]


def grid():
    """(head_dim, group, block_size, kind, variant, dtype, hnd) rotating every axis across the others."""
    cases = []
    for i, (hd, g) in enumerate(itertools.product(HEAD_DIMS, GROUPS)):
        cases.append((hd, g, BLOCK_SIZES[i % 5], KINDS[i % 4], VARIANTS[i % 6], [np.float32, np.float16][i % 2],
                      bool(i % 3 == 0)))
    return cases


def run_case(rng, hd, group, bs, kind, variant, np_dtype, hnd, num_kv_heads=2):
    seq_lens, query_lens = make_batch(rng, kind, int(rng.choice([1, 2, 3, 5, 7])), 200 if kind == "decode" else 60)
    p = make_problem(rng, head_dim=hd, num_q_heads=group * num_kv_heads, num_kv_heads=num_kv_heads, block_size=bs,
                     seq_lens=seq_lens, query_lens=query_lens, hnd=hnd, np_dtype=np_dtype)
    hq = group * num_kv_heads
    alibi = (2.0 ** (-8.0 * np.arange(1, hq + 1) / hq)).astype(np.float32) if variant.get("alibi") else None
    sinks = rng.uniform(-1, 3, hq).astype(np.float32) if variant.get("sinks") else None
    kw = dict(scale=variant.get("scale", 0.0), window_left=variant.get("window_left", 0),
              softcap=variant.get("softcap", 0.0))
    out, lse = pagedattn.attention(p["q"], p["k"], p["v"], p["block_tables"], p["seq_lens"], p["query_start_loc"],
                                   alibi_slopes=alibi, sinks=sinks, return_lse=True, **kw)
    want, want_lse = reference(p, alibi_slopes=alibi, sinks=sinks, **kw)
    tol = 2 * rounding_error(want, np_dtype) + 1e-5
    assert out.dtype == np_dtype and out.shape == p["q"].shape
    assert rel_error(out, want) <= tol, (rel_error(out, want), tol)
    if out.size:
        assert np.max(np.abs(lse - want_lse)) <= 1e-3


@pytest.mark.parametrize("case", grid(), ids=lambda c: f"hd{c[0]}-g{c[1]}-bs{c[2]}-{c[3]}-{np.dtype(c[5]).name}")
def test_numpy_grid(rng, case):
    run_case(rng, *case)


def test_strided_views_are_zero_copy_and_respected(rng):
    p = make_problem(rng, head_dim=64, num_q_heads=4, num_kv_heads=2, block_size=16, seq_lens=[40, 17],
                     query_lens=[5, 17])
    wide = np.zeros((p["q"].shape[0], 4, 64 + 8), dtype=np.float32)
    wide[:, :, :64] = p["q"]
    query = wide[:, :, :64]                     # strided view: a gap after every head
    out_buf = np.full((p["q"].shape[0], 4, 80), np.nan, dtype=np.float32)
    out = out_buf[:, :, :64]
    result = pagedattn.attention(query, p["k"], p["v"], p["block_tables"], p["seq_lens"], p["query_start_loc"], out)
    assert result is out
    want, _ = reference(p)
    assert rel_error(out, want) < 1e-5
    assert np.isnan(out_buf[:, :, 64:]).all()   # the gaps stay untouched


def test_errors_carry_the_cpp_messages(rng):
    p = make_problem(rng, head_dim=64, num_q_heads=4, num_kv_heads=2, block_size=16, seq_lens=[20, 33],
                     query_lens=[1, 10])
    args = [p["q"], p["k"], p["v"], p["block_tables"], p["seq_lens"], p["query_start_loc"]]
    bad = p["block_tables"].copy()
    bad[1, 1] = 999
    with pytest.raises(pagedattn.Error, match=r"block_tables\[1\]\[1\] = 999 is outside the pool"):
        pagedattn.attention(*args[:3], bad, *args[4:])
    with pytest.raises(pagedattn.Error, match=r"sequence 1 has query_len 10 > seq_len 9"):
        pagedattn.attention(*args[:4], np.array([20, 9], dtype=np.int32), args[5])
    with pytest.raises(pagedattn.Error, match=r"seq_lens must be int32, got int64"):
        pagedattn.attention(*args[:4], p["seq_lens"].astype(np.int64), args[5])
    with pytest.raises(pagedattn.Error, match=r"num_q_heads \(3\) must be a multiple of num_kv_heads \(2\)"):
        pagedattn.attention(p["q"][:, :3], *args[1:])
    with pytest.raises(ValueError):  # Error is a ValueError
        pagedattn.attention(p["q"][:, :, :32], *args[1:])


def test_block_manager_write_kv_and_attention_end_to_end(rng):
    """Prompts through the block manager and batch builder, K/V through write_kv, attention against the reference."""
    hd, hkv, hq, bs = 64, 2, 6, 4
    mgr = pagedattn.BlockManager(64, bs)
    k_cache = np.zeros((64, bs, hkv, hd), dtype=np.float32)
    v_cache = np.zeros_like(k_cache)
    prompts = {1: list(range(10)), 2: list(range(7))}
    for seq, toks in prompts.items():
        assert mgr.allocate(seq, toks) == 0
    batch = mgr.build_batch([(1, 10), (2, 4)])       # sequence 2: a first chunk of 4 tokens
    n = batch["slot_mapping"].shape[0]
    keys = rng.uniform(-1, 1, (n, hkv, hd)).astype(np.float32)
    values = rng.uniform(-1, 1, (n, hkv, hd)).astype(np.float32)
    pagedattn.write_kv(keys, values, batch["slot_mapping"], k_cache, v_cache)
    q = rng.uniform(-1, 1, (n, hq, hd)).astype(np.float32)
    out = pagedattn.attention(q, k_cache, v_cache, batch["block_tables"], batch["seq_lens"],
                              batch["query_start_loc"], max_query_len=batch["max_query_len"],
                              max_seq_len=batch["max_seq_len"])
    # Dense reference from the same keys: sequence 1 holds rows 0..9, sequence 2 rows 10..13.
    for seq_rows in (range(0, 10), range(10, 14)):
        rows = list(seq_rows)
        for t, row in enumerate(rows):
            for h in range(hq):
                s = keys[rows[:t + 1], h // 3] @ q[row, h] / 8.0
                w = np.exp(s - s.max())
                np.testing.assert_allclose(out[row, h], (w @ values[rows[:t + 1], h // 3]) / w.sum(), rtol=1e-4,
                                           atol=1e-5)
    for seq, done in ((1, 10), (2, 4)):
        mgr.mark_computed(seq, done)
    assert mgr.allocate(3, list(range(10))) == 8      # prefix cache: two full blocks of sequence 1
    # Sequence 2's first block holds the same tokens (0..3) as sequence 1's: either copy is a valid hit.
    assert mgr.block_table(3)[0] in (mgr.block_table(1)[0], mgr.block_table(2)[0])
    assert mgr.block_table(3)[1] == mgr.block_table(1)[1]
    mgr.fork(1, 4)
    copies = mgr.append(4, [99])
    assert copies == [(mgr.block_table(1)[2], mgr.block_table(4)[2])]
    with pytest.raises(pagedattn.Error, match="unknown sequence 77"):
        mgr.free(77)


def test_info():
    info = pagedattn.info()
    assert info["version"] == pagedattn.__version__
    assert isinstance(info["cuda_built"], bool) and isinstance(info["cuda_available"], bool)
    # Available means built and a device visible; otherwise the reason says which of the two is missing.
    assert info["cuda_available"] == (info["cuda_built"] and len(info["devices"]) > 0)
    if not info["cuda_available"]:
        want = "no GPU is visible" if info["cuda_built"] else "no CUDA backend"
        assert want in info["cuda_unavailable_reason"]
    else:
        assert info["cuda_unavailable_reason"] == ""


def test_non_tensor_arguments_name_themselves(rng):
    p = make_problem(rng, head_dim=64, num_q_heads=4, num_kv_heads=2, block_size=16, seq_lens=[20], query_lens=[1])
    args = [p["q"], p["k"], p["v"], p["block_tables"], p["seq_lens"], p["query_start_loc"]]
    names = ["query", "k_cache", "v_cache", "block_tables", "seq_lens", "query_start_loc"]
    for i, name in enumerate(names):
        bad = list(args)
        bad[i] = bad[i].tolist()  # a Python list where a tensor belongs
        with pytest.raises(pagedattn.Error, match=rf"^{name} must be a numpy array or a DLPack tensor .*got list"):
            pagedattn.attention(*bad)
    with pytest.raises(pagedattn.Error, match="sinks must be"):
        pagedattn.attention(*args, sinks=[0.0] * 4)
    with pytest.raises(pagedattn.Error, match="query must be"):
        pagedattn.attention_workspace_size("q", *args[1:])


def test_read_only_outputs_name_themselves(rng):
    p = make_problem(rng, head_dim=64, num_q_heads=4, num_kv_heads=2, block_size=16, seq_lens=[20], query_lens=[1])
    key = rng.standard_normal((1, 2, 64)).astype(np.float32)
    slots = np.array([3], dtype=np.int64)
    for name in ("k_cache", "v_cache"):
        caches = {"k_cache": p["k"].copy(), "v_cache": p["v"].copy()}
        caches[name].setflags(write=False)
        with pytest.raises(pagedattn.Error, match=rf"^{name} is a read-only array"):
            pagedattn.write_kv(key, key, slots, caches["k_cache"], caches["v_cache"])
    out = np.empty_like(p["q"])
    out.setflags(write=False)
    with pytest.raises(pagedattn.Error, match="^out is a read-only array"):
        pagedattn.attention(p["q"], p["k"], p["v"], p["block_tables"], p["seq_lens"], p["query_start_loc"], out)
    # Read-only inputs are fine: attention only reads the cache.
    k_ro, v_ro = p["k"].copy(), p["v"].copy()
    k_ro.setflags(write=False)
    v_ro.setflags(write=False)
    pagedattn.attention(p["q"], k_ro, v_ro, p["block_tables"], p["seq_lens"], p["query_start_loc"])


def test_torch_cpu_tensors(rng):
    torch = pytest.importorskip("torch")
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        p = make_problem(rng, head_dim=96, num_q_heads=10, num_kv_heads=2, block_size=7, seq_lens=[50, 31, 1],
                         query_lens=[1, 31, 1])
        t = {k: torch.from_numpy(v).to(dtype) if v.dtype == np.float32 else torch.from_numpy(v)
             for k, v in p.items() if isinstance(v, np.ndarray)}
        out = pagedattn.attention(t["q"], t["k"], t["v"], t["block_tables"], t["seq_lens"], t["query_start_loc"])
        assert isinstance(out, torch.Tensor) and out.dtype == dtype
        p64 = dict(p, q=t["q"].double().numpy(), k=t["k"].double().numpy(), v=t["v"].double().numpy())
        want, _ = reference(p64)
        err = rel_error(out.double().numpy(), want)
        assert err <= 2 * rel_error(torch.from_numpy(want).to(dtype).double().numpy(), want) + 1e-5
