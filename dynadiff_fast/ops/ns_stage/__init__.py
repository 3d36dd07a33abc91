"""``ns_stage`` / ``ns_advection``: the fused work between the FFTs of a pseudo-spectral RK4 step.

One stage of the integrating-factor (Lawson) RK4 step of ``d v/dt = L v + N(v)`` runs as

    phys  = irfft2(spec)                 # [n, 4, H, W]: u, v, w_x, w_y   (LO: the stage input fields)
    q     = ns_advection(phys)           # -(u w_x + v w_y)               (LO: the reaction term)
    q_hat = rfft2(q)
    acc, spec = ns_stage(s, q_hat, v_hat, acc, E, kx, ky, mask, dt, forcing, velocity)

``ns_stage`` does, per Fourier mode and in one pass: dealias (``mask``), add the forcing, combine
the RK4 stage with the integrating factor ``E = exp(L dt/2)``, and (``velocity=True``) solve the
Poisson equation for the next stage's ``(u, v, w_x, w_y)`` spectra. See ``reference.py`` for the
exact formulas. Shapes:

    nonlin_hat, state_hat, acc   complex [n, F, H, Wr]     (Wr = W//2 + 1; acc unused at stage 1)
    half_decay                   real    [n or 1, 1, H, Wr]
    kx [Wr], ky [H], mask [H, Wr] real (same precision as the complex tensors)
    forcing                      complex [n or 1, F, H, Wr] or None
    returns (acc_out [n, F, H, Wr], next)      C = 4 if velocity else F output fields
        layout="half":   next [n, C, H, Wr]    -> irfft2(next) gives the fields
        layout="packed": next [n, C/2, H, W]   -> fft2(next) gives (a - i b) per field pair; the
                         CPU solver's layout: one *forward* complex FFT instead of two real inverse
                         ones (MKL's batched c2r runs several times slower than its forward FFTs)

``ns_advection`` takes the real ``[n, 4, H, W]`` fields or the complex ``[n, 2, H, W]`` packed ones.

Backends: ``torch`` (reference), ``cpp`` (CPU, OpenMP, complex interleaved), ``triton`` (GPU).
Not differentiable (data generation only).
"""

from __future__ import annotations

import torch

from dynadiff_fast import _backend
from dynadiff_fast._tensor import as_tensor, check_tensor
from dynadiff_fast.ops.ns_stage import reference
from dynadiff_fast.profiling import nvtx_range

COMPLEX = (torch.complex64, torch.complex128)
REAL = (torch.float32, torch.float64)

OP = _backend.hot_op("ns_stage", __name__, ("torch", "cpp", "triton"), cpp_symbol="ns_stage_cpu")
ADVECTION_OP = _backend.hot_op("ns_advection", __name__, ("torch", "cpp", "triton"), cpp_symbol="ns_advection_cpu")


def check_stage_inputs(
    stage, nonlin_hat, state_hat, acc, half_decay, kx, ky, mask, forcing, velocity, layout, width
) -> None:
    """Raise ``TypeError``/``ValueError`` naming the argument when shapes, dtypes or devices do not fit."""
    if stage not in (1, 2, 3, 4):
        raise ValueError(f"stage: must be 1, 2, 3 or 4, got {stage!r}")
    if layout not in ("half", "packed"):
        raise ValueError(f"layout: must be 'half' or 'packed', got {layout!r}")
    check_tensor(nonlin_hat, "nonlin_hat", dtypes=COMPLEX, ndim=4)
    n, F, H, Wr = nonlin_hat.shape
    real = torch.float32 if nonlin_hat.dtype == torch.complex64 else torch.float64
    for name, t in (("state_hat", state_hat), ("acc", acc)):
        check_tensor(t, name, dtypes=(nonlin_hat.dtype,), device=nonlin_hat.device)
        if t.shape != nonlin_hat.shape:
            raise ValueError(f"{name}: shape {tuple(t.shape)} differs from nonlin_hat {tuple(nonlin_hat.shape)}")
    expected = {"half_decay": (None, 1, H, Wr), "kx": (Wr,), "ky": (H,), "mask": (H, Wr)}
    for name, t in (("half_decay", half_decay), ("kx", kx), ("ky", ky), ("mask", mask)):
        check_tensor(t, name, dtypes=(real,), device=nonlin_hat.device)
        shape = expected[name]
        if t.dim() != len(shape) or any(e is not None and e != s for e, s in zip(shape, t.shape)):
            raise ValueError(f"{name}: expected shape {shape} (None = n or 1), got {tuple(t.shape)}")
    if half_decay.shape[0] not in (1, n):
        raise ValueError(f"half_decay: batch size must be 1 or n={n}, got {half_decay.shape[0]}")
    if forcing is not None:
        check_tensor(forcing, "forcing", dtypes=(nonlin_hat.dtype,), device=nonlin_hat.device, ndim=4)
        if forcing.shape[0] not in (1, n) or forcing.shape[1:] != nonlin_hat.shape[1:]:
            raise ValueError(f"forcing: expected [n or 1, {F}, {H}, {Wr}], got {tuple(forcing.shape)}")
    if velocity and F != 1:
        raise ValueError(f"velocity: needs a single vorticity field (F=1), got F={F}")
    if F > 8:
        raise ValueError(f"nonlin_hat: at most 8 fields, got F={F}")
    if not isinstance(width, int) or width // 2 + 1 != Wr:
        raise ValueError(f"width: the physical W must satisfy W // 2 + 1 = {Wr}, got {width!r}")
    if layout == "packed" and not velocity and F % 2:
        raise ValueError(f"layout: 'packed' pairs the output fields; F={F} is odd")


@torch.library.custom_op("dynadiff::ns_stage", mutates_args=())
def _ns_stage_op(
    stage: int,
    nonlin_hat: torch.Tensor,
    state_hat: torch.Tensor,
    acc: torch.Tensor,
    half_decay: torch.Tensor,
    kx: torch.Tensor,
    ky: torch.Tensor,
    mask: torch.Tensor,
    dt: float,
    forcing: torch.Tensor | None,
    velocity: bool,
    layout: str,
    width: int,
    backend: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    with nvtx_range("kernel/ns_stage"):
        fn = OP.impl(backend, nonlin_hat.device.type)
        acc_out, nxt = fn(
            stage, nonlin_hat, state_hat, acc, half_decay, kx, ky, mask, dt, forcing, velocity, layout, width
        )
        if nxt is acc_out:  # the reference's stage 4 returns one tensor twice; custom ops may not alias
            nxt = nxt.clone()
        return acc_out.contiguous(), nxt.contiguous()


@_ns_stage_op.register_fake
def _(stage, nonlin_hat, state_hat, acc, half_decay, kx, ky, mask, dt, forcing, velocity, layout, width, backend):
    n, F, H, Wr = nonlin_hat.shape
    c = 4 if velocity else F
    shape = (n, c // 2, H, width) if layout == "packed" else (n, c, H, Wr)
    return torch.empty_like(nonlin_hat), nonlin_hat.new_empty(shape)


@torch.library.custom_op("dynadiff::ns_advection", mutates_args=())
def _ns_advection_op(fields: torch.Tensor, backend: str) -> torch.Tensor:
    with nvtx_range("kernel/ns_advection"):
        return ADVECTION_OP.impl(backend, fields.device.type)(fields).contiguous()


@_ns_advection_op.register_fake
def _(fields, backend):
    n, _, H, W = fields.shape
    return fields.new_empty((n, 1, H, W), dtype=fields.real.dtype)


def _contig(t):
    return None if t is None else t.contiguous()


def ns_stage(
    stage: int,
    nonlin_hat,
    state_hat,
    acc,
    half_decay,
    kx,
    ky,
    mask,
    dt: float,
    forcing=None,
    velocity: bool = False,
    layout: str = "half",
    width: int | None = None,
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """One fused Lawson-RK4 stage in Fourier space; see the module docstring for shapes and math.
    ``width``: the physical grid width W (default ``2 (Wr - 1)``, pass it for odd W)."""
    args = [as_tensor(t, name) for t, name in ((nonlin_hat, "nonlin_hat"), (state_hat, "state_hat"), (acc, "acc"))]
    args += [as_tensor(t, name) for t, name in ((half_decay, "half_decay"), (kx, "kx"), (ky, "ky"), (mask, "mask"))]
    forcing = None if forcing is None else as_tensor(forcing, "forcing")
    width = 2 * (args[0].shape[-1] - 1) if width is None and args[0].dim() == 4 else width
    check_stage_inputs(stage, *args, forcing, velocity, layout, width)
    if not isinstance(dt, (int, float)) or not dt > 0:
        raise ValueError(f"dt: must be a positive number, got {dt!r}")
    resolved = OP.resolve(backend, args[0].device.type)
    args = [t.contiguous() for t in args]
    return _ns_stage_op(stage, *args, float(dt), _contig(forcing), bool(velocity), layout, width, resolved)


def ns_advection(fields, backend: str = "auto") -> torch.Tensor:
    """``-(u w_x + v w_y)`` ``[n, 1, H, W]`` from real ``[n, 4, H, W]`` ``(u, v, w_x, w_y)`` or complex
    ``[n, 2, H, W]`` ``(u - i v, w_x - i w_y)`` (the fft2 of the packed layout)."""
    fields = check_tensor(as_tensor(fields, "fields"), "fields", dtypes=REAL + COMPLEX, ndim=4)
    if fields.shape[1] != (2 if fields.is_complex() else 4):
        raise ValueError(
            f"fields: expected real [n, 4, H, W] (u, v, w_x, w_y) or complex [n, 2, H, W], got "
            f"{fields.dtype} {tuple(fields.shape)}"
        )
    return _ns_advection_op(fields.contiguous(), ADVECTION_OP.resolve(backend, fields.device.type))


def bind(backend: str, device_type: str):
    """``(stage_fn, advection_fn)`` of the resolved backend, for solver loops that validated their
    operands once: the signatures of ``ns_stage``/``ns_advection`` minus ``backend`` (every argument
    positional and required), without the
    per-call checks and dispatch (~0.5 ms per call, as much as the work itself on small grids)."""
    stage_impl = OP.impl(backend, device_type)
    advection_impl = ADVECTION_OP.impl(backend, device_type)

    def stage_fn(stage, nonlin_hat, state_hat, acc, half_decay, kx, ky, mask, dt, forcing, velocity, layout, width):
        with nvtx_range("kernel/ns_stage"):
            return stage_impl(
                stage, nonlin_hat, state_hat, acc, half_decay, kx, ky, mask, dt, forcing, velocity, layout, width
            )

    def advection_fn(fields):
        with nvtx_range("kernel/ns_advection"):
            return advection_impl(fields)

    return stage_fn, advection_fn


velocity_spectra = reference.velocity_spectra

__all__ = ["ns_stage", "ns_advection", "velocity_spectra", "bind"]
