"""C++ backend of spectral_mix (csrc/spectral_mix_cpu.cpp): CPU, OpenMP, complex64/complex128."""

from __future__ import annotations

import torch

from dynadiff_fast import _backend
from dynadiff_fast._tensor import tensor_arg
from dynadiff_fast.ops.spectral_mix import dense


def kernel_args(x_ft: torch.Tensor, weight: torch.Tensor) -> tuple[torch.Tensor, tuple, tuple]:
    """The output ``[E, B, O, *modes]``, the (x, w, out, double) arguments of the C++/CUDA kernels
    (real views ``[..., M, 2]`` of contiguous complex tensors, modes flattened to M), and the
    tensors behind those raw pointers, which the caller must hold until the kernel has run."""
    E, B, I = x_ft.shape[:3]
    O, modes = weight.shape[2], x_ft.shape[3:]
    M = x_ft[0, 0, 0].numel() if x_ft.numel() else int(torch.Size(modes).numel())
    x = dense(x_ft).reshape(E, B, I, M)
    w = dense(weight).reshape(E, I, O, M)
    out = torch.empty((E, B, O, *modes), dtype=x_ft.dtype, device=x_ft.device)
    args = (
        tensor_arg(torch.view_as_real(x), "x_ft"),
        tensor_arg(torch.view_as_real(w), "weight"),
        tensor_arg(torch.view_as_real(out.reshape(E, B, O, M)), "out"),
        x_ft.dtype == torch.complex128,
    )
    return out, args, (x, w)


def spectral_mix(x_ft: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """x_ft [E, B, I, *modes], weight [E, I, O, *modes] complex -> [E, B, O, *modes]."""
    out, args, _keep_alive = kernel_args(x_ft, weight)
    _backend.require_extension().spectral_mix_cpu(*args)
    return out
