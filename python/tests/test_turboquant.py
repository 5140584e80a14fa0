"""TurboQuant caches through the Python package (CPU): the host data exposed for inspection, and write_kv +
attention over the four planes against attention over the unquantized K/V (the quantization error, bounded
per preset)."""

import numpy as np
import pytest

import pagedattn
from reference import make_batch, make_problem


def test_host_data_is_exposed():
    cb = pagedattn.turboquant_codebook(128, 4)
    assert len(cb["centroids"]) == 16 and len(cb["midpoints"]) == 15
    assert abs(cb["distortion"] - 0.00931) <= 0.01 * 0.00931
    c = np.array(cb["centroids"])
    assert np.all(np.diff(c) > 0) and np.array_equal(c, -c[::-1]) and cb["midpoints"][7] == 0.0
    rot = pagedattn.turboquant_rotation(96)
    assert rot["block"] == 32 and set(rot["signs"]) == {-1, 1} and len(rot["signs"]) == 96
    assert pagedattn.turboquant_bytes("tq_k4v4", 128)["total"] == 134
    assert pagedattn.turboquant_bytes("tq_k3v3", 128)["total"] == 102


# Relative error of attention over a TurboQuant cache against the unquantized cache, on random K/V (uniform
# +-2, whose averaged outputs are small, so relative errors are large): measured over 3 draws at head dims 80
# and 128, k8v4 0.066-0.070, k4v4 0.071-0.106, k3v4 0.10-0.19, k3v3 0.17-0.23; the bounds leave ~1.4x margin.
BOUNDS = {"tq_k8v4": 0.1, "tq_k4v4": 0.16, "tq_k3v4": 0.28, "tq_k3v3": 0.35}


@pytest.mark.parametrize("preset", pagedattn.TURBOQUANT_PRESETS)
@pytest.mark.parametrize("head_dim", [80, 128])
def test_attention_over_codes_tracks_the_unquantized_cache(rng, preset, head_dim):
    seq_lens, query_lens = make_batch(rng, "mixed", 5, 120)
    p = make_problem(rng, head_dim=head_dim, num_q_heads=8, num_kv_heads=2, block_size=16, seq_lens=seq_lens,
                     query_lens=query_lens)
    nb, bs, hkv, d = p["k"].shape
    b = pagedattn.turboquant_bytes(preset, d)
    k = np.zeros((nb, bs, hkv, b["key_codes"]), np.uint8)
    v = np.zeros((nb, bs, hkv, b["value_codes"]), np.uint8)
    k_meta = np.zeros((nb, bs, hkv), np.float16) if b["key_norm"] else None
    v_meta = np.zeros((nb, bs, hkv, 2), np.float16)
    cache = pagedattn.PagedKVCache(k, v, k_meta=k_meta, v_meta=v_meta, format=preset)
    # Every slot of the pool, written from the unquantized pools.
    slots = np.arange(nb * bs, dtype=np.int64)
    cache.write(p["k"].reshape(nb * bs, hkv, d), p["v"].reshape(nb * bs, hkv, d), slots)
    batch = (p["block_tables"], p["seq_lens"], p["query_start_loc"])
    want = pagedattn.attention(p["q"], p["k"], p["v"], *batch)
    plan = pagedattn.Plan(p["q"], cache, *batch)
    got = plan.run(p["q"], cache)
    flat = pagedattn.attention(p["q"], k, v, *batch, k_meta=k_meta, v_meta=v_meta, kv_format=preset)
    assert np.array_equal(got, flat)
    err = np.linalg.norm(got - want) / np.linalg.norm(want)
    assert err <= BOUNDS[preset], err


def test_bad_format_and_planes_name_themselves(rng):
    p = make_problem(rng, head_dim=64, num_q_heads=4, num_kv_heads=2, block_size=16, seq_lens=[20], query_lens=[4])
    nb, bs, hkv, d = p["k"].shape
    k = np.zeros((nb, bs, hkv, 32), np.uint8)
    v = np.zeros((nb, bs, hkv, 32), np.uint8)
    v_meta = np.zeros((nb, bs, hkv, 2), np.float16)
    batch = (p["block_tables"], p["seq_lens"], p["query_start_loc"])
    with pytest.raises(pagedattn.Error, match="unknown TurboQuant preset 'tq_k9v9'"):
        pagedattn.attention(p["q"], k, v, *batch, v_meta=v_meta, kv_format="tq_k9v9")
    with pytest.raises(pagedattn.Error, match="a tq_k4v4 cache needs cache.k_meta"):
        pagedattn.attention(p["q"], k, v, *batch, v_meta=v_meta, kv_format="tq_k4v4")


def _query_rows_kv(p):
    """The K/V rows of each sequence's query positions, in query-row order: what write_kv gets in a step."""
    bs = p["k"].shape[1]
    rows = []
    for i, s in enumerate(p["seq_lens"]):
        q0, q1 = int(p["query_start_loc"][i]), int(p["query_start_loc"][i + 1])
        pos = np.arange(int(s) - (q1 - q0), int(s))
        blocks = p["block_tables"][i][pos // bs]
        rows.append((p["k"][blocks, pos % bs], p["v"][blocks, pos % bs]))
    return (np.concatenate([r[0] for r in rows]), np.concatenate([r[1] for r in rows]))


@pytest.mark.parametrize("preset", pagedattn.TURBOQUANT_PRESETS)
def test_new_kv_gives_prefill_its_raw_tokens(rng, preset):
    """The spec's prefill semantics through new_key/new_value: fresh prompts attend to their raw K/V only, so
    they match attention over the unquantized cache to fp32 rounding (the rotation); in a mixed batch the
    quantization error only comes from the cached prefixes, never above the error of reading everything from
    codes; a plan made without them refuses them."""
    seq_lens, query_lens = make_batch(rng, "prefill", 4, 90)
    p = make_problem(rng, head_dim=96, num_q_heads=6, num_kv_heads=2, block_size=7, seq_lens=seq_lens,
                     query_lens=query_lens)
    nb, bs, hkv, d = p["k"].shape
    b = pagedattn.turboquant_bytes(preset, d)

    def quantized_cache(p):
        cache = pagedattn.PagedKVCache(
            np.zeros((nb, bs, hkv, b["key_codes"]), np.uint8), np.zeros((nb, bs, hkv, b["value_codes"]), np.uint8),
            k_meta=np.zeros((nb, bs, hkv), np.float16) if b["key_norm"] else None,
            v_meta=np.zeros((nb, bs, hkv, 2), np.float16), format=preset)
        cache.write(p["k"].reshape(nb * bs, hkv, d), p["v"].reshape(nb * bs, hkv, d),
                    np.arange(nb * bs, dtype=np.int64))
        return cache

    batch = (p["block_tables"], p["seq_lens"], p["query_start_loc"])
    new_k, new_v = _query_rows_kv(p)
    want = pagedattn.attention(p["q"], p["k"], p["v"], *batch)
    got = pagedattn.Plan(p["q"], quantized_cache(p), *batch, new_key=new_k, new_value=new_v).run(
        p["q"], quantized_cache(p), new_key=new_k, new_value=new_v)
    assert np.linalg.norm(got - want) / np.linalg.norm(want) < 1e-5

    seq_lens, query_lens = make_batch(rng, "mixed", 6, 120)
    p = make_problem(rng, head_dim=96, num_q_heads=6, num_kv_heads=2, block_size=7, seq_lens=seq_lens,
                     query_lens=query_lens)
    nb, bs, hkv, d = p["k"].shape
    batch = (p["block_tables"], p["seq_lens"], p["query_start_loc"])
    cache = quantized_cache(p)
    new_k, new_v = _query_rows_kv(p)
    want = pagedattn.attention(p["q"], p["k"], p["v"], *batch)
    raw = pagedattn.attention(p["q"], cache.k, cache.v, *batch, k_meta=cache.k_meta, v_meta=cache.v_meta,
                              kv_format=preset, new_key=new_k, new_value=new_v)
    coded = pagedattn.Plan(p["q"], cache, *batch).run(p["q"], cache)
    err_raw = np.linalg.norm(raw - want) / np.linalg.norm(want)
    err_coded = np.linalg.norm(coded - want) / np.linalg.norm(want)
    assert err_raw <= err_coded * 1.05 + 1e-6, (err_raw, err_coded)
    with pytest.raises(pagedattn.Error, match="the presence of new_key/new_value"):
        pagedattn.Plan(p["q"], cache, *batch).run(p["q"], cache, new_key=new_k, new_value=new_v)
