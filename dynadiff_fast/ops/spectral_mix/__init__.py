"""``spectral_mix``: per-expert complex Fourier-mode mixing, the hot op of every FNO layer.

    out[e, b, o, m] = sum_i x_ft[e, b, i, m] * weight[e, i, o, m]       (einsum 'ebi...,eio...->ebo...')

x_ft ``[E, B, I, *modes]`` and weight ``[E, I, O, *modes]`` are complex64 or complex128 (same dtype,
same device); the result is ``[E, B, O, *modes]``. ``modes`` is any number of trailing axes, seen as
one flat mode set ``M = prod(modes)``: BatchedFNO gathers FNO's two mode blocks along H (positive
and negative frequencies) into one contiguous ``[m_h, m_w]`` block before calling the op, so the
op never knows about FFT layouts.

Gradients (PyTorch's conjugate convention) are two more calls of the same op:
    grad_x = spectral_mix(grad_out, conj(weight)^T)        weight^T: [E, O, I, *modes]
    grad_w = spectral_mix(conj(x_ft)^T, grad_out)          x_ft^T:   [E, I, B, *modes]
so every backend gets forward and backward, and double backward, from one kernel.

Backends: ``torch`` (einsum), ``cpp`` (CPU: planar register tiles, OpenMP over (expert, output block),
AVX2/FMA clone picked at run time), ``triton`` (planar real/imag tiles), ``cuda`` (one launch for
all experts, weights read once, coalesced). Forward and backward of every backend are its kernel.
"""

from __future__ import annotations

import torch

from dynadiff_fast import _backend
from dynadiff_fast._tensor import as_tensor, check_tensor
from dynadiff_fast.profiling import nvtx_range

COMPLEX = (torch.complex64, torch.complex128)

OP = _backend.hot_op(
    "spectral_mix",
    __name__,
    ("torch", "cpp", "cuda", "triton"),
    cpp_symbol="spectral_mix_cpu",
    cuda_symbol="spectral_mix_cuda",
)


def dense(t: torch.Tensor) -> torch.Tensor:
    """``t`` as a contiguous tensor without a lazy conjugate bit, in at most one copy pass."""
    if t.is_contiguous() and not t.is_conj():
        return t
    out = torch.empty(t.shape, dtype=t.dtype, device=t.device)
    return out.copy_(t)  # copy_ materialises the conjugation and the layout together


def check_inputs(x_ft: torch.Tensor, weight: torch.Tensor) -> None:
    """Raise ``TypeError``/``ValueError`` naming the argument when the shapes or dtypes do not fit."""
    check_tensor(x_ft, "x_ft", dtypes=COMPLEX)
    check_tensor(weight, "weight", dtypes=COMPLEX)
    if x_ft.dim() < 3:
        raise ValueError(f"x_ft: expected [E, B, I, *modes] (>= 3 dims), got shape {tuple(x_ft.shape)}")
    if weight.dim() != x_ft.dim():
        raise ValueError(
            f"weight: expected [E, I, O, *modes] with {x_ft.dim()} dims like x_ft, got shape {tuple(weight.shape)}"
        )
    if weight.dtype != x_ft.dtype:
        raise TypeError(f"weight: dtype {weight.dtype} differs from x_ft's {x_ft.dtype}")
    if weight.device != x_ft.device:
        raise ValueError(f"weight: on {weight.device}, x_ft on {x_ft.device}; both must be on one device")
    E, _, I = x_ft.shape[:3]
    if weight.shape[0] != E or weight.shape[1] != I or weight.shape[3:] != x_ft.shape[3:]:
        raise ValueError(
            f"weight: shape {tuple(weight.shape)} does not fit x_ft {tuple(x_ft.shape)}; expected "
            f"[E={E}, I={I}, O, *modes={tuple(x_ft.shape[3:])}]"
        )


@torch.library.custom_op("dynadiff::spectral_mix", mutates_args=())
def _spectral_mix_op(x_ft: torch.Tensor, weight: torch.Tensor, backend: str) -> torch.Tensor:
    with nvtx_range("kernel/spectral_mix"):
        # Contiguous output whatever the backend (einsum may return a permuted view): fake == real.
        return OP.impl(backend, x_ft.device.type)(x_ft, weight).contiguous()


@_spectral_mix_op.register_fake
def _(x_ft, weight, backend):
    return x_ft.new_empty((x_ft.shape[0], x_ft.shape[1], weight.shape[2], *x_ft.shape[3:]))


def _setup_context(ctx, inputs, output):
    x_ft, weight, backend = inputs
    ctx.save_for_backward(x_ft, weight)
    ctx.backend = backend


def _backward(ctx, grad_out):
    # Lazy conjugate/transposed views: einsum takes them as they are, the kernels materialise each in
    # one copy pass (``dense``).
    x_ft, weight = ctx.saved_tensors
    grad_x = grad_w = None
    if ctx.needs_input_grad[0]:
        grad_x = _spectral_mix_op(grad_out, weight.conj().transpose(1, 2), ctx.backend)
    if ctx.needs_input_grad[1]:
        grad_w = _spectral_mix_op(x_ft.conj().transpose(1, 2), grad_out, ctx.backend)
    return grad_x, grad_w, None


_spectral_mix_op.register_autograd(_backward, setup_context=_setup_context)


def spectral_mix(x_ft, weight, backend: str = "auto") -> torch.Tensor:
    """out[e, b, o, m] = sum_i x_ft[e, b, i, m] * weight[e, i, o, m]; see the module docstring.

    Args:
        x_ft: complex [E, B, I, *modes] (torch tensor, or NumPy/CuPy array via DLPack).
        weight: complex [E, I, O, *modes], same dtype and device.
        backend: "auto" | "torch" | "cpp" | "cuda" | "triton".
    Returns:
        complex [E, B, O, *modes]; differentiable w.r.t. both inputs.
    """
    x_ft, weight = as_tensor(x_ft, "x_ft"), as_tensor(weight, "weight")
    check_inputs(x_ft, weight)
    return _spectral_mix_op(x_ft, weight, _resolve(backend, x_ft.device.type))


@torch.compiler.assume_constant_result
def _resolve(backend: str, device_type: str) -> str:
    # A constant under torch.compile: the backend choice is made at trace time, not traced.
    return OP.resolve(backend, device_type)
