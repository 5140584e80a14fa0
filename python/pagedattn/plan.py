"""Objects over the C++ plan/run seam: a layer's paged cache, and attention planned once per batch shape.

    cache = [pagedattn.PagedKVCache.allocate(num_blocks, 16, num_kv_heads, 128, torch.float8_e4m3fn, "cuda")
             for _ in range(num_layers)]
    plan = pagedattn.Plan(query, cache[0], block_tables, seq_lens, query_start_loc,
                          max_query_len=..., max_seq_len=...)          # once per step: choice + workspace
    for layer in range(num_layers):
        cache[layer].write(key, value, slot_mapping)
        out = plan.run(query, cache[layer])                             # per layer: launch only

``Plan.run`` makes no choice, allocates nothing (when ``out`` is given) and never synchronizes, so it can be
captured in a CUDA graph; the batch tensors the plan was made with are the ones every run reads (update them
in place between replays, keep their shapes).
"""

from __future__ import annotations

import sys

from . import _pagedattn as _C
from ._util import Error, _empty, _tensor, current_stream

# The framework dtype names of each cache format (numpy has no bf16/fp8; torch has all of them).
_TORCH_FORMATS = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32", "fp8_e4m3": "float8_e4m3fn",
                  "fp8_e5m2": "float8_e5m2", "int8": "int8"}
# TurboQuant presets (PagedKVCache(format=...), PagedKVCache.allocate(..., dtype=preset)).
TURBOQUANT_PRESETS = ("tq_k8v4", "tq_k4v4", "tq_k3v4", "tq_k3v3")


class PagedKVCache:
    """One layer's paged K/V cache: the K and V pools [num_blocks, block_size, num_kv_heads, head_dim] (any
    strides, head_dim contiguous) and the format's extra tensors: ``k_scale`` / ``v_scale`` (fp8, optional
    float32 [1] or [num_kv_heads]) or ``k_meta`` / ``v_meta`` (int8, float32 [num_blocks, block_size,
    num_kv_heads], the per-token scales). The pools' dtype names the format.

    TurboQuant caches (``format="tq_k8v4" | "tq_k4v4" | "tq_k3v4" | "tq_k3v3"``) are four planes: k and v uint8
    code rows [num_blocks, block_size, num_kv_heads, code bytes], k_meta float16 key norms [num_blocks,
    block_size, num_kv_heads] (none for tq_k8v4) and v_meta float16 [..., 2] (value scale, minimum); the head
    dim comes from the query / key. ``allocate`` makes them; ``pagedattn.turboquant_bytes`` gives the sizes."""

    def __init__(self, k_cache, v_cache, *, k_scale=None, v_scale=None, k_meta=None, v_meta=None, format=None):
        # Writability is checked by write(): attention only reads the cache (read-only arrays are fine there).
        _tensor(k_cache, "k_cache")
        _tensor(v_cache, "v_cache")
        for x, name in ((k_scale, "k_scale"), (v_scale, "v_scale"), (k_meta, "k_meta"), (v_meta, "v_meta")):
            _tensor(x, name, optional=True)
        self.k, self.v = k_cache, v_cache
        self.k_scale, self.v_scale, self.k_meta, self.v_meta = k_scale, v_scale, k_meta, v_meta
        self.format = format

    @classmethod
    def allocate(cls, num_blocks: int, block_size: int, num_kv_heads: int, head_dim: int, dtype, device="cuda"):
        """A torch cache of this geometry and format (``dtype``: a torch dtype or a format name such as
        "fp8_e4m3"), with the int8 format's metadata planes. Pools are uninitialized; fp8 scales are absent
        (1.0)."""
        import torch

        if isinstance(dtype, str) and dtype.startswith("tq_"):  # a TurboQuant preset: four planes
            b = _C.turboquant_bytes(dtype, head_dim)
            rows = (num_blocks, block_size, num_kv_heads)
            k = torch.zeros(rows + (b["key_codes"],), dtype=torch.uint8, device=device)
            v = torch.zeros(rows + (b["value_codes"],), dtype=torch.uint8, device=device)
            k_meta = torch.zeros(rows, dtype=torch.float16, device=device) if b["key_norm"] else None
            v_meta = torch.zeros(rows + (2,), dtype=torch.float16, device=device)
            return cls(k, v, k_meta=k_meta, v_meta=v_meta, format=dtype)
        if isinstance(dtype, str):
            if dtype not in _TORCH_FORMATS:
                raise Error(f"unknown cache format '{dtype}'; expected one of "
                            f"{', '.join(list(_TORCH_FORMATS) + list(TURBOQUANT_PRESETS))}")
            dtype = getattr(torch, _TORCH_FORMATS[dtype])
        shape = (num_blocks, block_size, num_kv_heads, head_dim)
        k = torch.empty(shape, dtype=dtype, device=device)
        v = torch.empty(shape, dtype=dtype, device=device)
        meta = {}
        if dtype == torch.int8:
            meta = {name: torch.zeros(shape[:3], dtype=torch.float32, device=device) for name in ("k_meta", "v_meta")}
        return cls(k, v, **meta)

    def _planes(self) -> dict:
        return dict(k_scale=self.k_scale, v_scale=self.v_scale, k_meta=self.k_meta, v_meta=self.v_meta,
                    kv_format=self.format or "")

    @property
    def num_blocks(self) -> int:
        return int(self.k.shape[0])

    @property
    def block_size(self) -> int:
        return int(self.k.shape[1])

    @property
    def num_kv_heads(self) -> int:
        return int(self.k.shape[2])

    @property
    def head_dim(self) -> int:
        """The vectors' head dim (for TurboQuant caches, known once a query or key has been seen: None before)."""
        return None if self.format else int(self.k.shape[3])

    def write(self, key, value, slot_mapping, *, validate: bool = True, stream: int | None = None) -> None:
        """Writes key/value [num_tokens, num_kv_heads, head_dim] at slot_mapping (int64; -1 skips), quantizing
        for fp8/int8 formats (see pagedattn.write_kv)."""
        for x, name in ((key, "key"), (value, "value"), (slot_mapping, "slot_mapping")):
            _tensor(x, name)
        for x, name in ((self.k, "k_cache"), (self.v, "v_cache")):
            _tensor(x, name, writable=True)
        for x, name in ((self.k_meta, "k_meta"), (self.v_meta, "v_meta")):
            _tensor(x, name, writable=True, optional=True)
        _C.write_kv(key, value, slot_mapping, self.k, self.v, stream=current_stream(key) if stream is None else stream,
                    validate=validate, **self._planes())

    def __repr__(self) -> str:
        fmt = self.format or str(self.k.dtype)
        return (f"PagedKVCache(num_blocks={self.num_blocks}, block_size={self.block_size}, "
                f"num_kv_heads={self.num_kv_heads}, format={fmt})")


class Plan:
    """Attention planned for one batch shape: made once per step, run once per layer (pagedattn/plan.h).

    query gives the shape (and dtype) of every run's query; cache any layer's cache (all layers share its
    geometry and format). block_tables [num_seqs, max_blocks] int32, seq_lens [num_seqs] int32 and
    query_start_loc [num_seqs + 1] int32 are the batch every run reads. max_query_len / max_seq_len are the
    batch's host hints (they steer the launch; -1 = unknown: the widest case). window_left fixes the sliding
    window. validate checks the batch's contents now (on the GPU: a copy and a synchronization, skipped while
    a CUDA graph is captured). The workspace is allocated once in query's framework unless one is given.
    new_key / new_value (optional, both or neither, shaped like every run's): runs will pass the step's raw K/V
    [num_tokens, num_kv_heads, head_dim] (see Plan.run). max_workspace_bytes (GPU; 0 = no cap): the plan takes
    fewer split-KV segments rather than need more workspace (one buffer reserved for every step).
    """

    def __init__(self, query, cache: PagedKVCache, block_tables, seq_lens, query_start_loc, *,
                 max_query_len: int = -1, max_seq_len: int = -1, window_left: int = 0, force_segments: int = 0,
                 validate: bool = True, workspace=None, stream: int | None = None, new_key=None, new_value=None,
                 max_workspace_bytes: int = 0):
        if not isinstance(cache, PagedKVCache):
            raise Error(f"cache must be a pagedattn.PagedKVCache, got {type(cache).__name__}")
        for x, name in ((query, "query"), (block_tables, "block_tables"), (seq_lens, "seq_lens"),
                        (query_start_loc, "query_start_loc")):
            _tensor(x, name)
        _tensor(workspace, "workspace", writable=True, optional=True)
        _tensor(new_key, "new_key", optional=True)
        _tensor(new_value, "new_value", optional=True)
        self.block_tables, self.seq_lens, self.query_start_loc = block_tables, seq_lens, query_start_loc
        self.max_query_len, self.max_seq_len = max_query_len, max_seq_len
        self.window_left, self.force_segments = window_left, force_segments
        self._plan = _C.plan_attention(query, cache.k, cache.v, block_tables, seq_lens, query_start_loc,
                                       max_query_len, max_seq_len, window_left, force_segments, **cache._planes(),
                                       new_key=new_key, new_value=new_value,
                                       max_workspace_bytes=max_workspace_bytes)
        if validate:
            _C.validate_batch(query, cache.k, cache.v, block_tables, seq_lens, query_start_loc, max_query_len,
                              max_seq_len, current_stream(query) if stream is None else stream, **cache._planes())
        size = self._plan.workspace_bytes
        if workspace is not None and _nbytes(workspace) < size:
            raise Error(f"workspace holds {_nbytes(workspace)} bytes; this plan needs {size}")
        self.workspace = workspace if workspace is not None or size == 0 else _empty(query, (size,), "uint8")

    @property
    def workspace_bytes(self) -> int:
        return self._plan.workspace_bytes

    def describe(self) -> str:
        """The launch the plan chose: kernel, tile, split-KV segments, grid, workspace."""
        return self._plan.describe()

    def run(self, query, cache: PagedKVCache, out=None, *, scale: float = 0.0, softcap: float = 0.0,
            alibi_slopes=None, sinks=None, return_lse: bool = False, lse=None, stream: int | None = None,
            new_key=None, new_value=None):
        """Attention of query over one layer's cache with the planned batch; returns out (and lse
        [num_tokens, num_q_heads] float32 when asked). Shapes, dtypes and format must be the planned ones.
        new_key / new_value: the step's raw K/V [num_tokens, num_kv_heads, head_dim] in the query dtype (what
        write was given), read for each sequence's query positions instead of the cache: the prefill
        semantics of quantized caches (given to the plan too; on CUDA for TurboQuant caches)."""
        if not isinstance(cache, PagedKVCache):
            raise Error(f"cache must be a pagedattn.PagedKVCache, got {type(cache).__name__}")
        _tensor(query, "query")
        _tensor(alibi_slopes, "alibi_slopes", optional=True)
        _tensor(sinks, "sinks", optional=True)
        _tensor(new_key, "new_key", optional=True)
        _tensor(new_value, "new_value", optional=True)
        _tensor(out, "out", writable=True, optional=True)
        _tensor(lse, "lse", writable=True, optional=True)
        if out is None:
            out = _empty(query, tuple(query.shape))
        if return_lse and lse is None:
            lse = _empty(query, (query.shape[0], query.shape[1]), "float32")
        _C.run_attention(self._plan, query, cache.k, cache.v, self.block_tables, self.seq_lens,
                         self.query_start_loc, out, scale=scale, window_left=self.window_left, softcap=softcap,
                         alibi_slopes=alibi_slopes, sinks=sinks, lse=lse, workspace=self.workspace,
                         max_query_len=self.max_query_len, max_seq_len=self.max_seq_len,
                         force_segments=self.force_segments,
                         stream=current_stream(query) if stream is None else stream, **cache._planes(),
                         new_key=new_key, new_value=new_value)
        return (out, lse) if (return_lse or lse is not None) else out

    def __repr__(self) -> str:
        return f"Plan({self.describe()})"


def _nbytes(x) -> int:
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(x, torch.Tensor):
        return x.numel() * x.element_size()
    return int(x.nbytes)
