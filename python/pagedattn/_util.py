"""Helpers shared by the Python API: argument checks, streams and allocation in the caller's framework."""

from __future__ import annotations

import sys

import numpy

from . import _pagedattn as _C

Error = _C.Error


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
