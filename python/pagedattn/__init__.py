"""pagedattn: attention over a paged KV cache.

Tensors are passed zero-copy through DLPack: numpy arrays and torch tensors on the CPU, torch (or any DLPack
producer such as CuPy) on CUDA. CUDA kernels run on the caller's current stream of the tensors' framework.
Errors raise ``pagedattn.Error`` (a ``ValueError``) with the C++ library's message.
"""

from __future__ import annotations

import importlib.util
import sys

import numpy

from . import _pagedattn as _C

Error = _C.Error
BlockManager = _C.BlockManager

__all__ = ["Error", "BlockManager", "info", "write_kv", "attention", "attention_workspace_size", "current_stream"]
__version__ = _C.build_info()["version"]


def info() -> dict:
    """Version, build configuration and visible CUDA devices.

    ``cuda_built``: this build has the CUDA backend; ``cuda_available``: it has, and a device is visible (the
    reason when not: ``cuda_unavailable_reason``); ``cuda_archs``, ``cuda_tma``, ``cuda_head_dims``,
    ``cuda_dtypes``, ``cuda_kv_formats``, ``cuda_instances`` ((query dtype, cache format, head dim) tuples):
    what the kernels were compiled for; ``devices``: one dict per visible device.
    """
    return _C.build_info()


def current_stream(tensor) -> int:
    """The raw cudaStream_t the caller's framework would use for ``tensor`` (0 for CPU tensors)."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(tensor, torch.Tensor):
        return torch.cuda.current_stream(tensor.device).cuda_stream if tensor.is_cuda else 0
    cupy = sys.modules.get("cupy")
    if cupy is not None and isinstance(tensor, cupy.ndarray):
        return cupy.cuda.get_current_stream().ptr
    return 0


def _tensor(x, name: str, *, writable: bool = False, optional: bool = False):
    """Checks that ``x`` can cross into the library as a tensor (a numpy array or any DLPack producer: torch,
    CuPy, JAX, ...), and is writable where the op writes it; raises pagedattn.Error naming the argument
    otherwise (instead of an AttributeError or a binding TypeError from deep inside)."""
    if x is None:
        if optional:
            return None
        raise Error(f"{name} is required: pass a numpy array or a DLPack tensor (torch, CuPy, ...)")
    if not isinstance(x, numpy.ndarray) and not hasattr(x, "__dlpack__"):
        raise Error(f"{name} must be a numpy array or a DLPack tensor (torch, CuPy, ...); got {type(x).__name__}"
                    + (" (convert it with numpy.asarray)" if isinstance(x, (list, tuple)) else ""))
    if writable and isinstance(x, numpy.ndarray) and not x.flags.writeable:
        raise Error(f"{name} is a read-only array, but this op writes into it: pass a writable array "
                    f"(e.g. {name}.copy())")
    return x


def _empty(t, shape, dtype=None):
    """An uninitialized array in ``t``'s framework and device; ``dtype`` is a name ("float32", "uint8"), default
    ``t``'s own dtype."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(t, torch.Tensor):
        return torch.empty(shape, dtype=getattr(torch, dtype) if dtype else t.dtype, device=t.device)
    cupy = sys.modules.get("cupy")
    mod = cupy if cupy is not None and isinstance(t, cupy.ndarray) else numpy
    return mod.empty(shape, dtype=dtype or t.dtype)


def _scales(k_scale, v_scale, k_meta, v_meta, writable_meta=False):
    """The cache format's optional fp8 scales and int8 metadata planes, checked like the other arguments."""
    for x, name in ((k_scale, "k_scale"), (v_scale, "v_scale")):
        _tensor(x, name, optional=True)
    for x, name in ((k_meta, "k_meta"), (v_meta, "v_meta")):
        _tensor(x, name, writable=writable_meta, optional=True)
    return dict(k_scale=k_scale, v_scale=v_scale, k_meta=k_meta, v_meta=v_meta)


def write_kv(key, value, slot_mapping, k_cache, v_cache, *, k_scale=None, v_scale=None, k_meta=None, v_meta=None,
             validate: bool = True, stream: int | None = None):
    """Writes key/value [num_tokens, num_kv_heads, head_dim] into the cache pools at slot_mapping (int64; -1 skips).

    The pools' dtype is the cache format: that of key (float16/bfloat16/float32), or a quantized one written
    with conversion: float8_e4m3fn / float8_e5m2 store value / scale (k_scale, v_scale: optional float32 [1] or
    [num_kv_heads], default 1.0; saturating); int8 stores codes with one float32 scale per token and KV head in
    k_meta / v_meta [num_blocks, block_size, num_kv_heads] (required).
    """
    for x, name in ((key, "key"), (value, "value"), (slot_mapping, "slot_mapping")):
        _tensor(x, name)
    _tensor(k_cache, "k_cache", writable=True)
    _tensor(v_cache, "v_cache", writable=True)
    _C.write_kv(key, value, slot_mapping, k_cache, v_cache,
                stream=current_stream(key) if stream is None else stream, validate=validate,
                **_scales(k_scale, v_scale, k_meta, v_meta, writable_meta=True))


def attention_workspace_size(query, k_cache, v_cache, block_tables, seq_lens, query_start_loc, *,
                             max_query_len: int = -1, max_seq_len: int = -1, force_segments: int = 0,
                             k_scale=None, v_scale=None, k_meta=None, v_meta=None) -> int:
    """Bytes of device workspace that ``attention`` needs for this batch shape (0 on the CPU)."""
    for x, name in ((query, "query"), (k_cache, "k_cache"), (v_cache, "v_cache"), (block_tables, "block_tables"),
                    (seq_lens, "seq_lens"), (query_start_loc, "query_start_loc")):
        _tensor(x, name)
    return _C.attention_workspace_size(query, k_cache, v_cache, block_tables, seq_lens, query_start_loc,
                                       max_query_len, max_seq_len, force_segments,
                                       **_scales(k_scale, v_scale, k_meta, v_meta))


def attention(query, k_cache, v_cache, block_tables, seq_lens, query_start_loc, out=None, *, scale: float = 0.0,
              window_left: int = 0, softcap: float = 0.0, alibi_slopes=None, sinks=None, return_lse: bool = False,
              lse=None, workspace=None, max_query_len: int = -1, max_seq_len: int = -1, validate: bool = True,
              force_segments: int = 0, stream: int | None = None, k_scale=None, v_scale=None, k_meta=None,
              v_meta=None):
    """Causal attention of query [num_tokens, num_q_heads, head_dim] over the paged cache.

    k_cache/v_cache: [num_blocks, block_size, num_kv_heads, head_dim] (any strides, head_dim contiguous), of the
    query's dtype or a quantized format read directly (float8_e4m3fn / float8_e5m2 with optional k_scale /
    v_scale; int8 with its k_meta / v_meta planes: see write_kv).
    block_tables [num_seqs, max_blocks] int32, seq_lens [num_seqs] int32 (cached tokens, new ones included),
    query_start_loc [num_seqs + 1] int32. Returns out (and lse [num_tokens, num_q_heads] float32 when asked).
    When workspace is None, one of attention_workspace_size() bytes is allocated in query's framework.
    """
    for x, name in ((query, "query"), (k_cache, "k_cache"), (v_cache, "v_cache"), (block_tables, "block_tables"),
                    (seq_lens, "seq_lens"), (query_start_loc, "query_start_loc")):
        _tensor(x, name)
    _tensor(alibi_slopes, "alibi_slopes", optional=True)
    _tensor(sinks, "sinks", optional=True)
    _tensor(out, "out", writable=True, optional=True)
    _tensor(lse, "lse", writable=True, optional=True)
    _tensor(workspace, "workspace", writable=True, optional=True)
    if out is None:
        out = _empty(query, tuple(query.shape))
    if return_lse and lse is None:
        lse = _empty(query, (query.shape[0], query.shape[1]), "float32")
    if workspace is None:
        size = attention_workspace_size(query, k_cache, v_cache, block_tables, seq_lens, query_start_loc,
                                        max_query_len=max_query_len, max_seq_len=max_seq_len,
                                        force_segments=force_segments, k_scale=k_scale, v_scale=v_scale,
                                        k_meta=k_meta, v_meta=v_meta)
        if size:
            workspace = _empty(query, (size,), "uint8")
    _C.attention(query, k_cache, v_cache, block_tables, seq_lens, query_start_loc, out, scale=scale,
                 window_left=window_left, softcap=softcap, alibi_slopes=alibi_slopes, sinks=sinks, lse=lse,
                 workspace=workspace, max_query_len=max_query_len, max_seq_len=max_seq_len, validate=validate,
                 force_segments=force_segments, stream=current_stream(query) if stream is None else stream,
                 **_scales(k_scale, v_scale, k_meta, v_meta))
    return (out, lse) if (return_lse or lse is not None) else out


if "torch" in sys.modules or importlib.util.find_spec("torch") is not None:
    try:
        from . import torch_ops  # noqa: F401  (registers torch.ops.pagedattn.*)
    except ImportError:  # torch present but unusable here: the DLPack API above still works
        pass
