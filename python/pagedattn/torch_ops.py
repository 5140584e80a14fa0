"""pagedattn ops registered with torch.library, so they work under torch.compile and inside CUDA-graph capture.

    out, lse = torch.ops.pagedattn.attention(query, k_cache, v_cache, block_tables, seq_lens, query_start_loc,
                                             scale, window_left, softcap, alibi_slopes, sinks, max_query_len,
                                             max_seq_len, k_scale, v_scale, k_meta, v_meta, kv_format,
                                             new_key, new_value)
    torch.ops.pagedattn.write_kv(key, value, slot_mapping, k_cache, v_cache,     # mutates k_cache, v_cache
                                 k_scale, v_scale, k_meta, v_meta, kv_format)    # (and k_meta, v_meta)

The cache may be float8_e4m3fn / float8_e5m2 (k_scale, v_scale: optional float32 [1] or [num_kv_heads]), int8
(k_meta, v_meta: its per-token scale planes) or a TurboQuant preset: uint8 code planes with kv_format naming it
("tq_k4v4", ...; k_meta float16 key norms, v_meta float16 (scale, minimum) pairs); see pagedattn.write_kv and
pagedattn.PagedKVCache. kv_format "" lets the planes' dtype name the format. new_key / new_value (optional): the
step's raw K/V, read for each sequence's query positions instead of the cache (see pagedattn.attention).

``attention`` is functional: it returns new tensors and takes its split-KV workspace from torch's allocator inside
the op, so a compiled graph sees one opaque call and a captured CUDA graph draws the workspace from its private
pool. max_query_len / max_seq_len fix the launch, so replays run the same kernels. Validation of device batch
contents is off here (it would synchronize); the eager ``pagedattn.attention`` validates by default.
"""

from __future__ import annotations

from typing import Optional

import torch

from . import _pagedattn as _C


def _stream(t: torch.Tensor) -> int:
    return torch.cuda.current_stream(t.device).cuda_stream if t.is_cuda else 0


@torch.library.custom_op("pagedattn::write_kv", mutates_args=("k_cache", "v_cache", "k_meta", "v_meta"))
def _write_kv(key: torch.Tensor, value: torch.Tensor, slot_mapping: torch.Tensor, k_cache: torch.Tensor,
              v_cache: torch.Tensor, k_scale: Optional[torch.Tensor], v_scale: Optional[torch.Tensor],
              k_meta: Optional[torch.Tensor], v_meta: Optional[torch.Tensor], kv_format: str = "") -> None:
    _C.write_kv(key, value, slot_mapping, k_cache, v_cache, stream=_stream(key), validate=False, k_scale=k_scale,
                v_scale=v_scale, k_meta=k_meta, v_meta=v_meta, kv_format=kv_format)


@_write_kv.register_fake
def _write_kv_fake(key, value, slot_mapping, k_cache, v_cache, k_scale, v_scale, k_meta, v_meta,
                   kv_format="") -> None:
    return None


@torch.library.custom_op("pagedattn::attention", mutates_args=())
def _attention(query: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, block_tables: torch.Tensor,
               seq_lens: torch.Tensor, query_start_loc: torch.Tensor, scale: float, window_left: int, softcap: float,
               alibi_slopes: Optional[torch.Tensor], sinks: Optional[torch.Tensor], max_query_len: int,
               max_seq_len: int, k_scale: Optional[torch.Tensor], v_scale: Optional[torch.Tensor],
               k_meta: Optional[torch.Tensor], v_meta: Optional[torch.Tensor], kv_format: str = "",
               new_key: Optional[torch.Tensor] = None,
               new_value: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
    scales = dict(k_scale=k_scale, v_scale=v_scale, k_meta=k_meta, v_meta=v_meta, kv_format=kv_format)
    new_kv = dict(new_key=new_key, new_value=new_value)
    out = torch.empty(query.shape, dtype=query.dtype, device=query.device)
    lse = torch.empty(query.shape[0], query.shape[1], dtype=torch.float32, device=query.device)
    size = _C.attention_workspace_size(query, k_cache, v_cache, block_tables, seq_lens, query_start_loc,
                                       max_query_len, max_seq_len, 0, **scales, **new_kv)
    workspace = torch.empty(size, dtype=torch.uint8, device=query.device) if size else None
    _C.attention(query, k_cache, v_cache, block_tables, seq_lens, query_start_loc, out, scale=scale,
                 window_left=window_left, softcap=softcap, alibi_slopes=alibi_slopes, sinks=sinks, lse=lse,
                 workspace=workspace, max_query_len=max_query_len, max_seq_len=max_seq_len, validate=False,
                 stream=_stream(query), **scales, **new_kv)
    return out, lse


@_attention.register_fake
def _attention_fake(query, k_cache, v_cache, block_tables, seq_lens, query_start_loc, scale, window_left, softcap,
                    alibi_slopes, sinks, max_query_len, max_seq_len, k_scale, v_scale, k_meta, v_meta, kv_format="",
                    new_key=None, new_value=None):
    return (query.new_empty(query.shape), query.new_empty((query.shape[0], query.shape[1]), dtype=torch.float32))


def write_kv(key, value, slot_mapping, k_cache, v_cache, *, k_scale=None, v_scale=None, k_meta=None,
             v_meta=None, kv_format: str = "") -> None:
    torch.ops.pagedattn.write_kv(key, value, slot_mapping, k_cache, v_cache, k_scale, v_scale, k_meta, v_meta,
                                 kv_format)


def attention(query, k_cache, v_cache, block_tables, seq_lens, query_start_loc, *, max_query_len: int,
              max_seq_len: int, scale: float = 0.0, window_left: int = 0, softcap: float = 0.0, alibi_slopes=None,
              sinks=None, return_lse: bool = False, k_scale=None, v_scale=None, k_meta=None, v_meta=None,
              kv_format: str = "", new_key=None, new_value=None):
    """torch.ops.pagedattn.attention with keyword arguments; returns out, or (out, lse)."""
    out, lse = torch.ops.pagedattn.attention(query, k_cache, v_cache, block_tables, seq_lens, query_start_loc, scale,
                                             window_left, softcap, alibi_slopes, sinks, max_query_len, max_seq_len,
                                             k_scale, v_scale, k_meta, v_meta, kv_format, new_key, new_value)
    return (out, lse) if return_lse else out
