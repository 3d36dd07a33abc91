"""Tensors crossing into C++/CUDA, and array interop.

The extension never links libtorch: a tensor crosses as ``(data_ptr, shape, strides)``, validated
here (dtype, device, contiguity, shape) with errors that name the argument, the value and what is
allowed. NumPy and CuPy arrays come in through DLPack without copies where the device matches.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def as_tensor(x, name: str = "input") -> torch.Tensor:
    """Return ``x`` as a torch tensor; NumPy/CuPy arrays are wrapped through DLPack (no copy)."""
    if isinstance(x, torch.Tensor):
        return x
    if hasattr(x, "__dlpack__"):
        try:
            return torch.from_dlpack(x)
        except (RuntimeError, BufferError, TypeError) as err:
            # Read-only or unusual NumPy arrays refuse DLPack; fall back to a copy through NumPy.
            if type(x).__module__.startswith("numpy"):
                return torch.as_tensor(x)
            raise TypeError(f"{name}: could not import {type(x).__name__} through DLPack ({err})") from err
    raise TypeError(f"{name}: expected a torch.Tensor, a NumPy or a CuPy array, got {type(x).__name__}")


def check_tensor(
    t: torch.Tensor,
    name: str,
    *,
    dtypes: Sequence[torch.dtype] | None = None,
    ndim: int | Sequence[int] | None = None,
    device: torch.device | str | None = None,
    finite: bool = False,
) -> torch.Tensor:
    """Validate a tensor argument; raise ``TypeError``/``ValueError`` naming it."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if dtypes is not None and t.dtype not in dtypes:
        allowed = ", ".join(str(d).replace("torch.", "") for d in dtypes)
        raise TypeError(f"{name}: dtype {str(t.dtype).replace('torch.', '')} not supported (allowed: {allowed})")
    if ndim is not None:
        allowed_nd = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if t.dim() not in allowed_nd:
            raise ValueError(f"{name}: expected {' or '.join(map(str, allowed_nd))} dims, got shape {tuple(t.shape)}")
    if device is not None and t.device != torch.device(device):
        raise ValueError(f"{name}: expected a tensor on {device}, got {t.device}")
    if finite and not bool(torch.isfinite(t).all()):
        bad = int((~torch.isfinite(t)).sum())
        raise ValueError(f"{name}: contains {bad} NaN/inf value(s); inputs must be finite")
    return t


def tensor_arg(t: torch.Tensor, name: str, *, contiguous: bool = True) -> tuple[int, list[int], list[int]]:
    """``(data_ptr, shape, strides)`` for the C++ ``TensorArg`` caster."""
    if contiguous and not t.is_contiguous():
        raise ValueError(f"{name}: the C++/CUDA kernels need a contiguous tensor; call .contiguous() first")
    return (t.data_ptr(), list(t.shape), list(t.stride()))


def cuda_stream(t: torch.Tensor) -> int:
    """Raw handle of the current CUDA stream on ``t``'s device (0 on CPU)."""
    if t.device.type != "cuda":
        return 0
    return torch.cuda.current_stream(t.device).cuda_stream
