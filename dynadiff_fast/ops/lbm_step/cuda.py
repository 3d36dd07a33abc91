"""CUDA backend of ``lbm_step``: a thin shim over ``_C.lbm_step_cuda`` (kernels/lbm_step.cu)."""

from __future__ import annotations

from dynadiff_fast import _backend
from dynadiff_fast._tensor import cuda_stream
from dynadiff_fast.ops.lbm_step.cpp import kernel_args


def lbm_step(f, omega, solid, u_in, steps, collision, magic, smagorinsky, x_boundary, y_boundary):
    out, scratch, args = kernel_args(
        f, omega, solid, u_in, steps, collision, magic, smagorinsky, x_boundary, y_boundary
    )
    _backend.require_extension().lbm_step_cuda(*args, cuda_stream(f))
    del scratch  # safe: the caching allocator reuses it only for work queued later on this stream
    return out
