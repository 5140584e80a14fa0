"""pagedattn: attention over a paged KV cache.

Tensors are passed zero-copy through DLPack: numpy arrays and torch tensors on the CPU, torch (or any DLPack
producer such as CuPy) on CUDA. CUDA kernels run on the caller's current stream of the tensors' framework.
Errors raise ``pagedattn.Error`` (a ``ValueError``) with the C++ library's message.
"""

from __future__ import annotations

import importlib.util
import sys

from . import _pagedattn as _C
from ._util import Error, _scales, _tensor, current_stream
from .llm import LLM, RequestOutput, SamplingParams
from .plan import TURBOQUANT_PRESETS, PagedKVCache, Plan

BlockManager = _C.BlockManager
turboquant_codebook = _C.turboquant_codebook  # (head_dim, bits) -> centroids, midpoints, distortion
turboquant_rotation = _C.turboquant_rotation  # head_dim -> Walsh-Hadamard block, signs, their seed
turboquant_bytes = _C.turboquant_bytes        # (preset, head_dim) -> bytes per token and KV head, by plane
if hasattr(_C, "save_random_checkpoint"):
    save_random_checkpoint = _C.save_random_checkpoint  # (folder, preset, weights_seed, dtype): a HF model folder

__all__ = ["Error", "BlockManager", "LLM", "SamplingParams", "RequestOutput", "PagedKVCache", "Plan", "info", "write_kv", "attention",
           "attention_workspace_size", "current_stream", "TURBOQUANT_PRESETS", "turboquant_codebook",
           "turboquant_rotation", "turboquant_bytes"]
__version__ = _C.build_info()["version"]


def info() -> dict:
    """Version, build configuration and visible CUDA devices.

    ``supported_head_dims``: the head dims every backend supports; ``cuda_built``: this build has the CUDA
    backend; ``cuda_available``: it has, and a device is visible (the
    reason when not: ``cuda_unavailable_reason``); ``cuda_archs``, ``cuda_tma``, ``cuda_head_dims``,
    ``cuda_dtypes``, ``cuda_kv_formats``, ``cuda_instances`` ((query dtype, cache format, head dim) tuples):
    what the kernels were compiled for; ``devices``: one dict per visible device.
    """
    return _C.build_info()


def write_kv(key, value, slot_mapping, k_cache, v_cache, *, k_scale=None, v_scale=None, k_meta=None, v_meta=None,
             validate: bool = True, stream: int | None = None, kv_format: str | None = None):
    """Writes key/value [num_tokens, num_kv_heads, head_dim] into the cache pools at slot_mapping (int64; -1 skips).

    The pools' dtype is the cache format: that of key (float16/bfloat16/float32), or a quantized one written
    with conversion: float8_e4m3fn / float8_e5m2 store value / scale (k_scale, v_scale: optional float32 [1] or
    [num_kv_heads], default 1.0; saturating); int8 stores codes with one float32 scale per token and KV head in
    k_meta / v_meta [num_blocks, block_size, num_kv_heads] (required). kv_format names a TurboQuant preset
    (its planes: see PagedKVCache).
    """
    cache = PagedKVCache(k_cache, v_cache, k_scale=k_scale, v_scale=v_scale, k_meta=k_meta, v_meta=v_meta,
                         format=kv_format)
    cache.write(key, value, slot_mapping, validate=validate, stream=stream)


def attention_workspace_size(query, k_cache, v_cache, block_tables, seq_lens, query_start_loc, *,
                             max_query_len: int = -1, max_seq_len: int = -1, force_segments: int = 0,
                             k_scale=None, v_scale=None, k_meta=None, v_meta=None, kv_format: str | None = None,
                             new_key=None, new_value=None) -> int:
    """Bytes of device workspace that ``attention`` needs for this batch shape (0 on the CPU)."""
    for x, name in ((query, "query"), (k_cache, "k_cache"), (v_cache, "v_cache"), (block_tables, "block_tables"),
                    (seq_lens, "seq_lens"), (query_start_loc, "query_start_loc")):
        _tensor(x, name)
    return _C.attention_workspace_size(query, k_cache, v_cache, block_tables, seq_lens, query_start_loc,
                                       max_query_len, max_seq_len, force_segments,
                                       **_scales(k_scale, v_scale, k_meta, v_meta), kv_format=kv_format or "",
                                       new_key=new_key, new_value=new_value)


def attention(query, k_cache, v_cache, block_tables, seq_lens, query_start_loc, out=None, *, scale: float = 0.0,
              window_left: int = 0, softcap: float = 0.0, alibi_slopes=None, sinks=None, return_lse: bool = False,
              lse=None, workspace=None, max_query_len: int = -1, max_seq_len: int = -1, validate: bool = True,
              force_segments: int = 0, stream: int | None = None, k_scale=None, v_scale=None, k_meta=None,
              v_meta=None, kv_format: str | None = None, new_key=None, new_value=None):
    """Causal attention of query [num_tokens, num_q_heads, head_dim] over the paged cache.

    k_cache/v_cache: [num_blocks, block_size, num_kv_heads, head_dim] (any strides, head_dim contiguous), of the
    query's dtype or a quantized format read directly (float8_e4m3fn / float8_e5m2 with optional k_scale /
    v_scale; int8 with its k_meta / v_meta planes: see write_kv).
    block_tables [num_seqs, max_blocks] int32, seq_lens [num_seqs] int32 (cached tokens, new ones included),
    query_start_loc [num_seqs + 1] int32. new_key / new_value (optional, both or neither): the step's raw K/V
    [num_tokens, num_kv_heads, head_dim], read for each sequence's query positions instead of the cache (the
    prefill semantics of quantized caches; on CUDA for TurboQuant caches). Returns out (and lse [num_tokens,
    num_q_heads] float32 when asked).
    When workspace is None, one of attention_workspace_size() bytes is allocated in query's framework.
    A convenience over Plan (plan, validate, run): a model that runs many layers over one batch makes a Plan
    once per step and calls Plan.run per layer.
    """
    cache = PagedKVCache(k_cache, v_cache, k_scale=k_scale, v_scale=v_scale, k_meta=k_meta, v_meta=v_meta,
                         format=kv_format)
    plan = Plan(query, cache, block_tables, seq_lens, query_start_loc, max_query_len=max_query_len,
                max_seq_len=max_seq_len, window_left=window_left, force_segments=force_segments, validate=validate,
                workspace=workspace, stream=stream, new_key=new_key, new_value=new_value)
    return plan.run(query, cache, out, scale=scale, softcap=softcap, alibi_slopes=alibi_slopes, sinks=sinks,
                    return_lse=return_lse, lse=lse, stream=stream, new_key=new_key, new_value=new_value)


if "torch" in sys.modules or importlib.util.find_spec("torch") is not None:
    try:
        from . import torch_ops  # noqa: F401  (registers torch.ops.pagedattn.*)
    except ImportError:  # torch present but unusable here: the DLPack API above still works
        pass
