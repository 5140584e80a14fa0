"""pagedattn.Plan and pagedattn.PagedKVCache: plan once per step, run per layer; the flat functions are
conveniences over them and agree with them exactly."""

import numpy as np
import pytest

import pagedattn
from reference import make_batch, make_problem, reference, rel_error, rounding_error


def layers(rng, n, **shape):
    """n problems of one batch: layer i keeps layer 0's query and batch, with its own K/V pools."""
    seq_lens, query_lens = make_batch(rng, "mixed", 5, 80)
    first = make_problem(rng, seq_lens=seq_lens, query_lens=query_lens, **shape)
    out = [first]
    for _ in range(n - 1):
        other = make_problem(rng, seq_lens=seq_lens, query_lens=query_lens, **shape)
        out.append(dict(first, k=other["k"], v=other["v"]))
    return out


def test_one_plan_runs_every_layer_like_the_flat_op(rng):
    ps = layers(rng, 3, head_dim=80, num_q_heads=10, num_kv_heads=2, block_size=7)
    first = ps[0]
    batch = (first["block_tables"], first["seq_lens"], first["query_start_loc"])
    plan = pagedattn.Plan(first["q"], pagedattn.PagedKVCache(first["k"], first["v"]), *batch, window_left=17,
                          max_workspace_bytes=1 << 20)  # a GPU option: no effect on the CPU
    assert plan.workspace_bytes == 0 and "cpu" in plan.describe()
    for p in ps:
        cache = pagedattn.PagedKVCache(p["k"], p["v"])
        out, lse = plan.run(first["q"], cache, softcap=10.0, return_lse=True)
        flat, flat_lse = pagedattn.attention(first["q"], p["k"], p["v"], *batch, window_left=17, softcap=10.0,
                                             return_lse=True)
        assert np.array_equal(out, flat) and np.array_equal(lse, flat_lse)
        want, _ = reference(p, window_left=17, softcap=10.0)
        assert rel_error(out, want) <= 2 * rounding_error(want, np.float32) + 1e-5


def test_run_of_another_shape_names_the_difference(rng):
    p = make_problem(rng, head_dim=64, num_q_heads=4, num_kv_heads=2, block_size=16, seq_lens=[30, 9],
                     query_lens=[3, 9])
    cache = pagedattn.PagedKVCache(p["k"], p["v"])
    plan = pagedattn.Plan(p["q"], cache, p["block_tables"], p["seq_lens"], p["query_start_loc"])
    with pytest.raises(pagedattn.Error, match="num_tokens .query rows. is 11 but the plan was made for 12"):
        plan.run(p["q"][:11], cache)
    with pytest.raises(pagedattn.Error, match="cache must be a pagedattn.PagedKVCache"):
        plan.run(p["q"], p["k"])
    wide = pagedattn.PagedKVCache(np.concatenate([p["k"], p["k"]], axis=1), np.concatenate([p["v"], p["v"]], axis=1))
    with pytest.raises(pagedattn.Error, match="block_size is 32 but the plan was made for 16"):
        plan.run(p["q"], wide)


def test_plan_validates_the_batch_once(rng):
    p = make_problem(rng, head_dim=64, num_q_heads=4, num_kv_heads=2, block_size=16, seq_lens=[30, 9],
                     query_lens=[3, 9])
    tables = p["block_tables"].copy()
    tables[0, 0] = 10_000
    with pytest.raises(pagedattn.Error, match="outside the pool"):
        pagedattn.Plan(p["q"], pagedattn.PagedKVCache(p["k"], p["v"]), tables, p["seq_lens"], p["query_start_loc"])
    # Without validation at plan time the CPU still refuses the bad id when it runs (it reads on the host).
    plan = pagedattn.Plan(p["q"], pagedattn.PagedKVCache(p["k"], p["v"]), tables, p["seq_lens"],
                          p["query_start_loc"], validate=False)
    with pytest.raises(pagedattn.Error, match="outside the pool"):
        plan.run(p["q"], pagedattn.PagedKVCache(p["k"], p["v"]))


def test_cache_object_writes_and_describes_itself(rng):
    k = np.zeros((4, 8, 2, 64), np.float32)
    v = np.zeros_like(k)
    cache = pagedattn.PagedKVCache(k, v)
    assert (cache.num_blocks, cache.block_size, cache.num_kv_heads, cache.head_dim) == (4, 8, 2, 64)
    key = rng.standard_normal((3, 2, 64)).astype(np.float32)
    value = rng.standard_normal((3, 2, 64)).astype(np.float32)
    cache.write(key, value, np.array([0, 9, -1], np.int64))
    assert np.array_equal(k[0, 0], key[0]) and np.array_equal(k[1, 1], key[1]) and np.array_equal(v[1, 1], value[1])
    assert not k[1, 2].any()  # slot -1 skipped
    readonly = k.copy()
    readonly.flags.writeable = False
    with pytest.raises(pagedattn.Error, match="k_cache is a read-only array"):
        pagedattn.PagedKVCache(readonly, v).write(key, value, np.array([0, 1, 2], np.int64))


@pytest.mark.parametrize("fmt", ["bf16", "fp8_e4m3", "int8"])
def test_cuda_plan_over_layers_and_graph_replay(rng, fmt):
    """Allocated caches of each format, written by PagedKVCache.write; one plan runs every layer like the flat
    op; a CUDA graph of the per-layer loop replays to the same bytes."""
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    compiled = pagedattn.info()["cuda_instances"]
    if ("bf16", fmt, 128) not in [tuple(i) for i in compiled]:
        pytest.skip(f"bf16 queries over {fmt} at head dim 128 are not compiled")
    dev = "cuda"
    num_layers, bs, hkv, hq, d = 3, 16, 2, 8, 128
    seq_lens = [1, 700, 2500]
    query_lens = [1, 1, 1]
    blocks_per_seq = [(s + bs - 1) // bs for s in seq_lens]
    num_blocks = sum(blocks_per_seq) + 3
    perm = torch.randperm(num_blocks, generator=torch.Generator().manual_seed(int(rng.integers(1 << 30))))
    tables = torch.zeros(len(seq_lens), max(blocks_per_seq), dtype=torch.int32)
    slots, at = [], 0
    for i, n in enumerate(blocks_per_seq):
        tables[i, :n] = perm[at:at + n].to(torch.int32)
        at += n
        slots += [int(tables[i, pos // bs]) * bs + pos % bs for pos in range(seq_lens[i])]
    tables = tables.to(dev)
    seq_t = torch.tensor(seq_lens, dtype=torch.int32, device=dev)
    qsl = torch.tensor([0, 1, 2, 3], dtype=torch.int32, device=dev)
    slot_t = torch.tensor(slots, dtype=torch.int64, device=dev)
    caches = [pagedattn.PagedKVCache.allocate(num_blocks, bs, hkv, d, fmt, dev) for _ in range(num_layers)]
    for c in caches:
        c.write(torch.randn(len(slots), hkv, d, device=dev, dtype=torch.bfloat16),
                torch.randn(len(slots), hkv, d, device=dev, dtype=torch.bfloat16), slot_t)
    q = torch.randn(3, hq, d, device=dev, dtype=torch.bfloat16)
    plan = pagedattn.Plan(q, caches[0], tables, seq_t, qsl, max_query_len=1, max_seq_len=max(seq_lens))
    outs = [plan.run(q, c) for c in caches]
    planes = lambda c: dict(k_meta=c.k_meta, v_meta=c.v_meta)  # noqa: E731
    for c, out in zip(caches, outs):
        flat = pagedattn.attention(q, c.k, c.v, tables, seq_t, qsl, max_query_len=1, max_seq_len=max(seq_lens),
                                   **planes(c))
        assert torch.equal(out, flat)
    static_out = [torch.empty_like(q) for _ in caches]
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for c, o in zip(caches, static_out):
            plan.run(q, c, o)
    graph.replay()
    torch.cuda.synchronize()
    for got, want in zip(static_out, outs):
        assert torch.equal(got, want)
    # Under a workspace cap of half the free choice's, fewer segments and the same results within rounding.
    if plan.workspace_bytes > 512:
        capped = pagedattn.Plan(q, caches[0], tables, seq_t, qsl, max_query_len=1, max_seq_len=max(seq_lens),
                                max_workspace_bytes=plan.workspace_bytes // 2)
        assert capped.workspace_bytes <= plan.workspace_bytes // 2, capped.describe()
        for c, want in zip(caches, outs):
            got = capped.run(q, c).float()
            assert (got - want.float()).norm() <= 1e-2 * want.float().norm()
