"""C++/OpenMP backend of ``lbm_step``: a thin shim over ``_C.lbm_step_cpu`` (csrc/lbm_step_cpu.cpp)."""

from __future__ import annotations

import torch

from dynadiff_fast import _backend
from dynadiff_fast._tensor import tensor_arg
from dynadiff_fast.ops.lbm_step.reference import COLLISIONS, X_BOUNDARIES, Y_BOUNDARIES


def kernel_args(f, omega, solid, u_in, steps, collision, magic, smagorinsky, x_boundary, y_boundary):
    """``(out, scratch, positional args)`` shared by the cpp and cuda shims: buffers plus integer codes.
    The caller holds ``scratch`` until the kernel returns (``args`` carries only its pointer)."""
    out = torch.empty_like(f)
    scratch = torch.empty_like(f) if steps > 1 else out
    args = (
        tensor_arg(f, "f"),
        tensor_arg(out, "out"),
        tensor_arg(scratch, "scratch"),
        tensor_arg(solid.view(torch.uint8), "solid"),
        tensor_arg(omega, "omega"),
        tensor_arg(u_in, "u_in"),
        steps,
        X_BOUNDARIES.index(x_boundary),
        Y_BOUNDARIES.index(y_boundary),
        COLLISIONS.index(collision),
        magic,
        smagorinsky,
    )
    return out, scratch, args


def lbm_step(f, omega, solid, u_in, steps, collision, magic, smagorinsky, x_boundary, y_boundary):
    out, scratch, args = kernel_args(
        f, omega, solid, u_in, steps, collision, magic, smagorinsky, x_boundary, y_boundary
    )
    _backend.require_extension().lbm_step_cpu(*args)
    del scratch
    return out
