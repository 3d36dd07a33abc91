"""CUDA backend of spectral_mix: a thin shim over ``_C.spectral_mix_cuda`` (kernels/spectral_mix.cu)."""

from __future__ import annotations

import torch

from dynadiff_fast import _backend
from dynadiff_fast._tensor import cuda_stream
from dynadiff_fast.ops.spectral_mix.cpp import kernel_args


def spectral_mix(x_ft: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """x_ft [E, B, I, *modes], weight [E, I, O, *modes] complex (CUDA) -> [E, B, O, *modes]."""
    out, args, _keep_alive = kernel_args(x_ft, weight)
    _backend.require_extension().spectral_mix_cuda(*args, cuda_stream(x_ft))
    return out
