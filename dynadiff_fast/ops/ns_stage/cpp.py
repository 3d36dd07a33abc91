"""C++/OpenMP backend: ``_C.ns_stage_cpu`` / ``_C.ns_advection_cpu`` over complex interleaved data."""

from __future__ import annotations

import torch

from dynadiff_fast._backend import require_extension
from dynadiff_fast._tensor import tensor_arg


def _arg(t: torch.Tensor, name: str):
    return tensor_arg(torch.view_as_real(t) if t.is_complex() else t, name)


def ns_stage(stage, nonlin_hat, state_hat, acc, half_decay, kx, ky, mask, dt, forcing, velocity, layout, width):
    C = require_extension()
    n, F, H, Wr = nonlin_hat.shape
    acc_out = torch.empty_like(nonlin_hat)
    c = 4 if velocity else F
    out = nonlin_hat.new_empty((n, c // 2, H, width) if layout == "packed" else (n, c, H, Wr))
    C.ns_stage_cpu(
        stage,
        _arg(nonlin_hat, "nonlin_hat"),
        _arg(state_hat, "state_hat"),
        _arg(acc, "acc"),
        _arg(half_decay, "half_decay"),
        _arg(kx, "kx"),
        _arg(ky, "ky"),
        _arg(mask, "mask"),
        float(dt),
        None if forcing is None else _arg(forcing, "forcing"),
        velocity,
        layout == "packed",
        width,
        _arg(acc_out, "acc_out"),
        _arg(out, "out"),
        nonlin_hat.dtype == torch.complex128,
    )
    return acc_out, out


def ns_advection(fields):
    C = require_extension()
    n, _, H, W = fields.shape
    q = torch.empty((n, 1, H, W), dtype=fields.real.dtype)
    C.ns_advection_cpu(_arg(fields, "fields"), _arg(q, "out"), fields.is_complex(), q.dtype == torch.float64)
    return q
