"""The CUDA backend through the Python package on torch tensors, against a float32 torch reference; CUDA-graph
capture and replay; torch.compile through the registered custom ops."""

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    pytest.skip("no CUDA device", allow_module_level=True)

import pagedattn  # noqa: E402
from pagedattn import torch_ops  # noqa: E402
from reference import make_batch, make_problem  # noqa: E402
from test_cpu import grid  # noqa: E402

DEV = "cuda"


def to_device(p, dtype):
    t = {}
    for key, val in p.items():
        if isinstance(val, np.ndarray):
            x = torch.from_numpy(np.ascontiguousarray(val) if key in ("k", "v") else val)
            if key in ("k", "v") and not val.flags["C_CONTIGUOUS"]:  # keep the HND physical layout
                x = torch.from_numpy(np.ascontiguousarray(val.transpose(0, 2, 1, 3))).transpose(1, 2)
            t[key] = x.to(DEV, dtype) if x.is_floating_point() else x.to(DEV)
        else:
            t[key] = val
    return t


def torch_reference(t, *, scale=0.0, window_left=0, softcap=0.0, alibi_slopes=None, sinks=None):
    """float32 attention per sequence with explicit masks (the inputs are the same rounded bf16/fp16 values)."""
    q, k, v = t["q"].float(), t["k"].float(), t["v"].float()
    hq, d = q.shape[1], q.shape[2]
    bs, hkv = k.shape[1], k.shape[2]
    group = hq // hkv
    scale = scale or 1.0 / math.sqrt(d)
    out = torch.zeros_like(q)
    lse = torch.zeros(q.shape[0], hq, device=DEV)
    qsl = t["query_start_loc"].tolist()
    for i, s in enumerate(t["seq_lens"].tolist()):
        q0, q1 = qsl[i], qsl[i + 1]
        if q1 == q0:
            continue
        pos = torch.arange(s, device=DEV)
        blocks = t["block_tables"][i][pos // bs].long()
        keys = k[blocks, pos % bs].repeat_interleave(group, dim=1)     # [s, hq, d]
        values = v[blocks, pos % bs].repeat_interleave(group, dim=1)
        qpos = torch.arange(s - (q1 - q0), s, device=DEV)
        x = torch.einsum("thd,shd->hts", q[q0:q1], keys) * scale
        if softcap:
            x = softcap * torch.tanh(x / softcap)
        if alibi_slopes is not None:
            x = x + alibi_slopes[:, None, None] * (pos[None, None, :] - qpos[None, :, None])
        visible = pos[None, :] <= qpos[:, None]
        if window_left:
            visible &= qpos[:, None] - pos[None, :] <= window_left
        x = x.masked_fill(~visible[None], float("-inf"))
        if sinks is not None:
            x = torch.cat([x, sinks[:, None, None].expand(hq, q1 - q0, 1)], dim=2)
        lse[q0:q1] = torch.logsumexp(x, dim=2).T
        prob = torch.softmax(x, dim=2)[..., :s]
        out[q0:q1] = torch.einsum("hts,shd->thd", prob, values)
    return out, lse


def check(out, lse, want, want_lse, dtype, factor=3.0):
    round_err = (want.to(dtype).float() - want).norm() / want.norm().clamp_min(1e-30)
    err = (out.float() - want).norm() / want.norm().clamp_min(1e-30)
    assert not torch.isnan(out).any()
    assert err <= factor * round_err + 1e-4, (float(err), float(round_err))
    if lse is not None and lse.numel():
        assert (lse - want_lse).abs().max() <= 1e-3


@pytest.mark.parametrize("case", grid(), ids=lambda c: f"hd{c[0]}-g{c[1]}-bs{c[2]}-{c[3]}")
def test_cuda_grid(rng, case):
    hd, group, bs, kind, variant, np_dtype, hnd = case
    dtype = torch.bfloat16 if np_dtype == np.float32 else torch.float16
    name = "bf16" if dtype == torch.bfloat16 else "fp16"
    if (name, name, hd) not in pagedattn.info()["cuda_instances"]:
        pytest.skip(f"{name} x {name} x {hd} not compiled in this build")
    seq_lens, query_lens = make_batch(rng, kind, int(rng.choice([1, 2, 3, 5, 7])), 700 if kind == "decode" else 120)
    p = make_problem(rng, head_dim=hd, num_q_heads=group * 2, num_kv_heads=2, block_size=bs, seq_lens=seq_lens,
                     query_lens=query_lens, hnd=hnd)
    t = to_device(p, dtype)
    hq = group * 2
    alibi = (2.0 ** (-8.0 * torch.arange(1, hq + 1, device=DEV) / hq)).float() if variant.get("alibi") else None
    sinks = torch.empty(hq, device=DEV).uniform_(-1, 3) if variant.get("sinks") else None
    kw = dict(scale=variant.get("scale", 0.0), window_left=variant.get("window_left", 0),
              softcap=variant.get("softcap", 0.0))
    out, lse = pagedattn.attention(t["q"], t["k"], t["v"], t["block_tables"], t["seq_lens"], t["query_start_loc"],
                                   alibi_slopes=alibi, sinks=sinks, return_lse=True, max_query_len=t["max_query_len"],
                                   max_seq_len=t["max_seq_len"], **kw)
    want, want_lse = torch_reference(t, alibi_slopes=alibi, sinks=sinks, **kw)
    check(out, lse, want, want_lse, dtype)


def test_runs_on_the_current_stream(rng):
    p = make_problem(rng, head_dim=128, num_q_heads=32, num_kv_heads=8, block_size=16, seq_lens=[4000] * 4,
                     query_lens=[1] * 4)
    t = to_device(p, torch.bfloat16)
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        out = pagedattn.attention(t["q"], t["k"], t["v"], t["block_tables"], t["seq_lens"], t["query_start_loc"],
                                  max_query_len=1, max_seq_len=4000)
    side.synchronize()
    want, _ = torch_reference(t)
    check(out, None, want, None, torch.bfloat16)


def test_write_kv_torch(rng):
    k_cache = torch.zeros(30, 16, 4, 80, dtype=torch.float16, device=DEV)
    v_cache = torch.zeros_like(k_cache)
    slots = torch.randperm(30 * 16, device=DEV)[:100]
    slots[7] = -1
    key = torch.randn(100, 4, 80, dtype=torch.float16, device=DEV)
    value = torch.randn_like(key)
    pagedattn.write_kv(key, value, slots, k_cache, v_cache)
    keep = slots >= 0
    flat_k = k_cache.view(-1, 4, 80)
    assert torch.equal(flat_k[slots[keep]], key[keep])
    assert torch.equal(v_cache.view(-1, 4, 80)[slots[keep]], value[keep])
    with pytest.raises(pagedattn.Error, match="is outside the pool of 480 slots"):
        pagedattn.write_kv(key, value, torch.full_like(slots, 480), k_cache, v_cache)


def decode_problem(rng, batch=6, context=3000):
    p = make_problem(rng, head_dim=128, num_q_heads=16, num_kv_heads=4, block_size=16, seq_lens=[context] * batch,
                     query_lens=[1] * batch)
    return to_device(p, torch.bfloat16)


def test_cuda_graph_capture_and_replay(rng):
    t = decode_problem(rng)
    args = (t["k"], t["v"], t["block_tables"], t["seq_lens"], t["query_start_loc"])
    q_static = t["q"].clone()
    size = pagedattn.attention_workspace_size(q_static, *args, max_query_len=1, max_seq_len=3000)
    workspace = torch.empty(max(size, 1), dtype=torch.uint8, device=DEV)
    out_static = torch.empty_like(q_static)
    call = dict(out=out_static, workspace=workspace, max_query_len=1, max_seq_len=3000)
    pagedattn.attention(q_static, *args, **call)  # warm-up outside capture (validates the batch)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        pagedattn.attention(q_static, *args, **call)
    for _ in range(3):  # new queries each replay
        q_new = torch.randn_like(q_static)
        q_static.copy_(q_new)
        graph.replay()
        eager = pagedattn.attention(q_new, *args, max_query_len=1, max_seq_len=3000)
        torch.cuda.synchronize()
        assert torch.equal(out_static, eager)
    want, _ = torch_reference(dict(t, q=q_static))
    check(out_static, None, want, None, torch.bfloat16)


@pytest.mark.parametrize("batch,context", [(6, 3000), (300, 600)])  # 2D / split, and persistent on Hopper
def test_attention_reads_what_the_kernel_before_it_wrote(rng, batch, context):
    """On sm_90 attention starts early (programmatic dependent launch) and write_kv lets it launch at once: the
    attention kernel must still wait for write_kv's stores. The cache is NaN until write_kv fills every slot
    the batch reads, and nothing synchronizes between the two calls."""
    t = decode_problem(rng, batch=batch, context=context)
    k_cache, v_cache, bs = t["k"], t["v"], t["k"].shape[1]
    pos = torch.arange(context, device=DEV)
    slots = (t["block_tables"][:, pos // bs].long() * bs + pos % bs).reshape(-1)
    key = k_cache.view(-1, *k_cache.shape[2:])[slots].clone()
    value = v_cache.view(-1, *v_cache.shape[2:])[slots].clone()
    args = (t["block_tables"], t["seq_lens"], t["query_start_loc"])
    want, _ = torch_reference(t)
    out = torch.empty_like(t["q"])
    for _ in range(3):
        k_cache.fill_(float("nan"))
        v_cache.fill_(float("nan"))
        out.fill_(float("nan"))
        pagedattn.write_kv(key, value, slots, k_cache, v_cache)
        pagedattn.attention(t["q"], k_cache, v_cache, *args, out=out, max_query_len=1, max_seq_len=context,
                            validate=False)
        torch.cuda.synchronize()
        check(out, None, want, None, torch.bfloat16)


def test_torch_compile_custom_ops(rng):
    t = decode_problem(rng, batch=3, context=777)
    num_tokens = t["q"].shape[0]
    slots = torch.arange(num_tokens, device=DEV, dtype=torch.int64) + 5  # overwrite a few cache rows

    def step(q, key, value, k_cache, v_cache):
        torch_ops.write_kv(key, value, slots, k_cache, v_cache)
        out, lse = torch_ops.attention(q, k_cache, v_cache, t["block_tables"], t["seq_lens"], t["query_start_loc"],
                                       max_query_len=1, max_seq_len=777, return_lse=True)
        return out * 2.0, lse

    key = torch.randn(num_tokens, 4, 128, dtype=torch.bfloat16, device=DEV)
    value = torch.randn_like(key)
    k_eager, v_eager = t["k"].clone(), t["v"].clone()
    want_out, want_lse = step(t["q"], key, value, k_eager, v_eager)
    compiled = torch.compile(step, fullgraph=True)
    k_comp, v_comp = t["k"].clone(), t["v"].clone()
    got_out, got_lse = compiled(t["q"], key, value, k_comp, v_comp)
    assert torch.equal(k_comp, k_eager) and torch.equal(v_comp, v_eager)
    assert torch.equal(got_out, want_out) and torch.equal(got_lse, want_lse)
    # And the op agrees with the reference on the updated cache.
    want, want_lse2 = torch_reference(dict(t, k=k_comp, v=v_comp))
    check(got_out / 2.0, got_lse, want, want_lse2, torch.bfloat16)


def test_custom_op_in_cuda_graph(rng):
    """The functional op draws its workspace from the graph's pool during capture and replays exactly."""
    t = decode_problem(rng, batch=2, context=9000)  # long enough for a split-KV launch (workspace needed)
    args = (t["k"], t["v"], t["block_tables"], t["seq_lens"], t["query_start_loc"])
    q_static = t["q"].clone()
    torch_ops.attention(q_static, *args, max_query_len=1, max_seq_len=9000)  # warm-up
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out_static = torch_ops.attention(q_static, *args, max_query_len=1, max_seq_len=9000)
    q_static.copy_(torch.randn_like(q_static))
    graph.replay()
    eager = torch_ops.attention(q_static, *args, max_query_len=1, max_seq_len=9000)
    torch.cuda.synchronize()
    assert torch.equal(out_static, eager)


def test_torch_ops_over_a_turboquant_cache(rng):
    """torch.ops with the format named: write_kv quantizes into uint8 planes on the GPU with the CPU writer's bytes,
    attention over them (compiled, and inside a CUDA graph) matches the CPU backend over the same bytes, with and
    without the step's raw K/V."""
    if ("bf16", "tq_k4v4", 128) not in pagedattn.build_info()["cuda_tq_instances"]:
        pytest.skip("no TurboQuant attention compiled for bf16 queries, tq_k4v4, head dim 128 in this build")
    seq_lens, query_lens = make_batch(rng, "decode", 5, 700)
    p = make_problem(rng, head_dim=128, num_q_heads=8, num_kv_heads=2, block_size=16, seq_lens=seq_lens,
                     query_lens=query_lens)
    nb, bs, hkv, d = p["k"].shape
    b = pagedattn.turboquant_bytes("tq_k4v4", d)
    planes = dict(k_cache=np.zeros((nb, bs, hkv, b["key_codes"]), np.uint8),
                  v_cache=np.zeros((nb, bs, hkv, b["value_codes"]), np.uint8),
                  k_meta=np.zeros((nb, bs, hkv), np.float16), v_meta=np.zeros((nb, bs, hkv, 2), np.float16))
    key = torch.from_numpy(p["k"].reshape(nb * bs, hkv, d)).to(DEV, torch.bfloat16)
    value = torch.from_numpy(p["v"].reshape(nb * bs, hkv, d)).to(DEV, torch.bfloat16)
    slots = torch.arange(nb * bs, dtype=torch.int64, device=DEV)
    g = {k: torch.zeros(v.shape, dtype=torch.uint8 if v.dtype == np.uint8 else torch.float16, device=DEV)
         for k, v in planes.items()}
    torch_ops.write_kv(key, value, slots, g["k_cache"], g["v_cache"], k_meta=g["k_meta"], v_meta=g["v_meta"],
                       kv_format="tq_k4v4")
    # The CPU writer over the same bf16 inputs stores the same bytes.
    cpu = {k: torch.zeros_like(v, device="cpu") for k, v in g.items()}
    torch_ops.write_kv(key.cpu(), value.cpu(), slots.cpu(), cpu["k_cache"], cpu["v_cache"], k_meta=cpu["k_meta"],
                       v_meta=cpu["v_meta"], kv_format="tq_k4v4")
    for k in g:
        assert torch.equal(g[k].cpu().view(torch.uint8), cpu[k].view(torch.uint8)), k
    tb = [torch.from_numpy(x).to(DEV) for x in (p["block_tables"], p["seq_lens"], p["query_start_loc"])]
    qg = torch.from_numpy(p["q"]).to(DEV, torch.bfloat16)
    want = torch_ops.attention(qg.cpu(), cpu["k_cache"], cpu["v_cache"], *[x.cpu() for x in tb], max_query_len=1,
                               max_seq_len=int(max(seq_lens)), k_meta=cpu["k_meta"], v_meta=cpu["v_meta"],
                               kv_format="tq_k4v4").float().numpy()

    def step(qx):
        return torch_ops.attention(qx, g["k_cache"], g["v_cache"], *tb, max_query_len=1,
                                   max_seq_len=int(max(seq_lens)), k_meta=g["k_meta"], v_meta=g["v_meta"],
                                   kv_format="tq_k4v4")

    got = torch.compile(step, fullgraph=True)(qg).float().cpu().numpy()
    assert np.linalg.norm(got - want) / np.linalg.norm(want) <= 2e-3
    graph = torch.cuda.CUDAGraph()
    step(qg)  # warm-up
    with torch.cuda.graph(graph):
        out_static = step(qg)
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(out_static, step(qg))
    nk = torch.randn(qg.shape[0], hkv, d, dtype=torch.bfloat16, device=DEV)
    nv = torch.randn_like(nk)
    got = torch_ops.attention(qg, g["k_cache"], g["v_cache"], *tb, max_query_len=1, max_seq_len=int(max(seq_lens)),
                              k_meta=g["k_meta"], v_meta=g["v_meta"], kv_format="tq_k4v4", new_key=nk,
                              new_value=nv).float().cpu().numpy()
    want = torch_ops.attention(qg.cpu(), cpu["k_cache"], cpu["v_cache"], *[x.cpu() for x in tb], max_query_len=1,
                               max_seq_len=int(max(seq_lens)), k_meta=cpu["k_meta"], v_meta=cpu["v_meta"],
                               kv_format="tq_k4v4", new_key=nk.cpu(), new_value=nv.cpu()).float().numpy()
    assert np.linalg.norm(got - want) / np.linalg.norm(want) <= 2e-3
