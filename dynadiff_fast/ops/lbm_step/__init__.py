"""``lbm_step``: fused D2Q9 lattice Boltzmann stream + collide (pull scheme), batched over environments.

    f = lbm_step(f, omega, solid, u_in, steps=200)        # f [n, 9, H, W] -> [n, 9, H, W]

Every environment (row) has its own relaxation rate ``omega[e] = 1/tau`` and solid mask ``solid[e]``
(bounce-back obstacles), so one call advances a whole dataset's worth of flows. The math, with its
boundary rules, is written out in ``reference.py`` (torch, roll-based) and ``kernels/common/d2q9.h``
(the per-cell update shared by the C++/OpenMP and CUDA kernels). Storage is float32 on the kernels;
the torch reference also runs float64.

Backends: ``torch`` (reference), ``cpp`` (CPU, OpenMP), ``cuda``. Not differentiable (a data
generator, not a training op).
"""

from __future__ import annotations

import torch

from dynadiff_fast import _backend
from dynadiff_fast._tensor import as_tensor, check_tensor
from dynadiff_fast.ops.lbm_step.reference import (
    COLLISIONS,
    X_BOUNDARIES,
    Y_BOUNDARIES,
    equilibrium,
    macroscopic,
)
from dynadiff_fast.profiling import nvtx_range

__all__ = ["lbm_step", "equilibrium", "macroscopic", "OP", "COLLISIONS", "X_BOUNDARIES", "Y_BOUNDARIES"]

OP = _backend.hot_op(
    "lbm_step",
    __name__,
    ("torch", "cpp", "cuda"),
    cpp_symbol="lbm_step_cpu",
    cuda_symbol="lbm_step_cuda",
)


@torch.library.custom_op("dynadiff::lbm_step", mutates_args=())
def _lbm_step_op(
    f: torch.Tensor,
    omega: torch.Tensor,
    solid: torch.Tensor,
    u_in: torch.Tensor,
    steps: int,
    collision: str,
    magic: float,
    smagorinsky: float,
    x_boundary: str,
    y_boundary: str,
    backend: str,
) -> torch.Tensor:
    fn = OP.impl(backend, f.device.type)
    return fn(f, omega, solid, u_in, steps, collision, magic, smagorinsky, x_boundary, y_boundary)


@_lbm_step_op.register_fake
def _(f, omega, solid, u_in, steps, collision, magic, smagorinsky, x_boundary, y_boundary, backend):
    return torch.empty_like(f)


def _choice(value: str, name: str, valid: tuple[str, ...]) -> str:
    if value not in valid:
        raise ValueError(f"{name}: {value!r} is not one of {', '.join(valid)}")
    return value


def lbm_step(
    f,
    omega,
    solid,
    u_in=None,
    *,
    steps: int = 1,
    collision: str = "trt",
    magic: float = 0.25,
    smagorinsky: float = 0.0,
    x_boundary: str = "inflow_outflow",
    y_boundary: str = "free_slip",
    backend: str = "auto",
) -> torch.Tensor:
    """Advance post-collision populations by ``steps`` fused stream + collide steps.

    Args:
        f: ``[n, 9, H, W]`` float32 (float64: torch backend only) post-collision populations, velocity order
            rest, E, N, W, S, NE, NW, SW, SE (x along W, y along H).
        omega: ``[n]`` relaxation rate ``1/tau`` per environment, in (0, 2); ``nu = (1/omega - 1/2) / 3``.
        solid: ``[n, H, W]`` bool/uint8 obstacle mask per environment (halfway bounce-back).
        u_in: ``[n, H]`` inlet x-velocity (lattice units) for ``x_boundary="inflow_outflow"``; ignored
            (may be None) for a periodic x.
        steps: number of steps (>= 1), run inside one kernel call with ping-pong buffers.
        collision: ``"bgk"`` or ``"trt"`` (two-relaxation-time with ``magic`` = Lambda, 1/4 by default).
        smagorinsky: Smagorinsky constant C of the eddy-viscosity model (0 = off; ~0.1 keeps under-resolved
            wakes at tau near 1/2 stable while leaving resolved flow unchanged).
        x_boundary: ``"periodic"`` or ``"inflow_outflow"`` (Zou-He velocity inlet at x = 0, zero-gradient
            outlet at x = W-1).
        y_boundary: ``"periodic"``, ``"no_slip"`` (bounce-back walls) or ``"free_slip"`` (specular walls).
        backend: ``"auto"``, ``"torch"``, ``"cpp"`` or ``"cuda"``.

    Returns:
        ``[n, 9, H, W]`` populations after ``steps`` steps (a new tensor; ``f`` is not modified).
    """
    f = check_tensor(as_tensor(f, "f"), "f", dtypes=(torch.float32, torch.float64), ndim=4)
    n, q, h, w = f.shape
    if q != 9:
        raise ValueError(f"f: expected 9 populations in dim 1 ([n, 9, H, W]), got shape {tuple(f.shape)}")
    if n == 0 or h == 0 or w == 0:
        raise ValueError(f"f: every dimension must be >= 1, got shape {tuple(f.shape)}")
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps: must be an int >= 1, got {steps!r}")
    collision = _choice(collision, "collision", COLLISIONS)
    x_boundary = _choice(x_boundary, "x_boundary", X_BOUNDARIES)
    y_boundary = _choice(y_boundary, "y_boundary", Y_BOUNDARIES)
    if not magic > 0:
        raise ValueError(f"magic: the TRT parameter Lambda must be > 0, got {magic!r}")
    if not smagorinsky >= 0:
        raise ValueError(f"smagorinsky: the Smagorinsky constant must be >= 0, got {smagorinsky!r}")
    if x_boundary == "inflow_outflow" and w < 2:
        raise ValueError(f"f: inflow_outflow needs W >= 2 (an inlet and an outlet column), got W = {w}")

    omega = check_tensor(as_tensor(omega, "omega"), "omega", ndim=1, device=f.device, finite=True)
    if omega.shape[0] != n:
        raise ValueError(f"omega: expected shape [{n}] (one per environment), got {tuple(omega.shape)}")
    bad = (omega <= 0) | (omega >= 2)
    if bad.any():
        e = int(bad.nonzero()[0])
        raise ValueError(f"omega: row {e} is {float(omega[e]):.6g}; stable relaxation needs 0 < omega < 2 (tau > 1/2)")
    solid = check_tensor(as_tensor(solid, "solid"), "solid", dtypes=(torch.bool, torch.uint8), ndim=3, device=f.device)
    if tuple(solid.shape) != (n, h, w):
        raise ValueError(f"solid: expected shape {(n, h, w)}, got {tuple(solid.shape)}")
    if u_in is None:
        if x_boundary == "inflow_outflow":
            raise ValueError("u_in: required ([n, H] inlet velocity) when x_boundary='inflow_outflow'")
        u_in = f.new_zeros(n, h)
    u_in = check_tensor(as_tensor(u_in, "u_in"), "u_in", ndim=2, device=f.device, finite=True)
    if tuple(u_in.shape) != (n, h):
        raise ValueError(f"u_in: expected shape {(n, h)}, got {tuple(u_in.shape)}")
    if (u_in.abs() >= 0.5).any():
        raise ValueError(f"u_in: |u_in| must be < 0.5 lattice units (low Mach), got max {float(u_in.abs().max()):.4g}")

    if f.dtype == torch.float64:
        if backend not in ("auto", "torch"):
            raise TypeError(f"f: the {backend} backend stores float32; pass float32 or use backend='torch'")
        backend = "torch"
    name = OP.resolve(backend, f.device.type)
    with nvtx_range("kernel/lbm_step"):
        return _lbm_step_op(
            f.contiguous(),
            omega.to(f.dtype).contiguous(),
            solid.bool().contiguous(),
            u_in.to(f.dtype).contiguous(),
            steps,
            collision,
            float(magic),
            float(smagorinsky),
            x_boundary,
            y_boundary,
            name,
        )
