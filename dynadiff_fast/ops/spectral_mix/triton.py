"""Triton backend of spectral_mix (GPUs; tested on tiny shapes under ``TRITON_INTERPRET=1``).

Complex tensors come in as their real views (interleaved re/im; Triton has no complex dtype) and
are split into planar real/imag tiles in registers. One program owns a ``[BLOCK_B, BLOCK_Q]`` tile of
the output of one expert, ``q`` = flat (o, m): each weight row ``w[e, i, o, m]`` is one coalesced
load shared by the BLOCK_B batch rows, and the sum over ``i`` runs in registers. The backward pass
is this same kernel on conjugated/transposed operands (see the package docstring).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from dynadiff_fast.ops.spectral_mix import dense

BLOCK_Q = 128


@triton.jit
def _spectral_mix_kernel(x_ptr, w_ptr, y_ptr, B, I, O, M, BLOCK_B: tl.constexpr, BLOCK_Q: tl.constexpr):
    e = tl.program_id(0).to(tl.int64)
    q = tl.program_id(1) * BLOCK_Q + tl.arange(0, BLOCK_Q)
    b = tl.program_id(2) * BLOCK_B + tl.arange(0, BLOCK_B)
    OM = O * M
    q_ok = q < OM
    ok = (b < B)[:, None] & q_ok[None, :]
    m = q % M
    acc_r = tl.zeros([BLOCK_B, BLOCK_Q], dtype=x_ptr.dtype.element_ty)
    acc_i = tl.zeros([BLOCK_B, BLOCK_Q], dtype=x_ptr.dtype.element_ty)
    x_row = (e * B + b[:, None]) * I * M + m[None, :]  # x[e, b, 0, m]
    w_row = e * I * OM + q  # w[e, 0, o, m]
    for i in range(0, I):
        wr = tl.load(w_ptr + 2 * (w_row + i * OM), mask=q_ok, other=0.0)[None, :]
        wi = tl.load(w_ptr + 2 * (w_row + i * OM) + 1, mask=q_ok, other=0.0)[None, :]
        xr = tl.load(x_ptr + 2 * (x_row + i * M), mask=ok, other=0.0)
        xi = tl.load(x_ptr + 2 * (x_row + i * M) + 1, mask=ok, other=0.0)
        acc_r += xr * wr - xi * wi
        acc_i += xr * wi + xi * wr
    y = (e * B + b[:, None]) * OM + q[None, :]
    tl.store(y_ptr + 2 * y, acc_r, mask=ok)
    tl.store(y_ptr + 2 * y + 1, acc_i, mask=ok)


def spectral_mix(x_ft: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """x_ft [E, B, I, *modes], weight [E, I, O, *modes] complex -> [E, B, O, *modes]."""
    E, B, I = x_ft.shape[:3]
    O, modes = weight.shape[2], x_ft.shape[3:]
    M = x_ft[0, 0, 0].numel()
    out = torch.empty((E, B, O, *modes), dtype=x_ft.dtype, device=x_ft.device)
    if out.numel() == 0:
        return out
    x = torch.view_as_real(dense(x_ft))
    w = torch.view_as_real(dense(weight))
    block_b = min(triton.next_power_of_2(B), 4)
    grid = (E, triton.cdiv(O * M, BLOCK_Q), triton.cdiv(B, block_b))
    _spectral_mix_kernel[grid](x, w, torch.view_as_real(out), B, I, O, M, BLOCK_B=block_b, BLOCK_Q=BLOCK_Q)
    return out
