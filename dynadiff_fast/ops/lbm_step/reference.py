"""Plain torch D2Q9 lattice Boltzmann step (roll-based streaming): the truth every backend is tested against.

State ``f [n, 9, H, W]`` holds post-collision populations (x along W, y along H). One step, for every
environment at once (rule by rule the same as ``kernels/common/d2q9.h``):

1. pull streaming ``g_i(x, y) = f_i(x - c_ix, y - c_iy)`` with
   - x periodic, or inflow/outflow: source x clamped to ``[0, W-1]`` (zero-gradient outlet; what the
     inlet column pulls from x = -1 is replaced in 2.),
   - y periodic, no-slip walls (halfway bounce-back ``g_i = f_opp(i)(x, y)``) or free-slip walls
     (specular reflection ``g_i = f_mirror(i)(x - c_ix, y)``; bounce-back if that cell is solid),
   - a solid source cell: halfway bounce-back ``g_i = f_opp(i)(x, y)``;
2. inlet column (x = 0), Zou-He velocity boundary: ``rho = (g_0 + g_2 + g_4 + 2 (g_3 + g_6 + g_7)) / (1 - u)``,
   ``g_1 = g_3 + 2/3 rho u``, ``g_5 = g_7 - (g_2 - g_4)/2 + rho u/6``, ``g_8 = g_6 + (g_2 - g_4)/2 + rho u/6``
   (the cell then has exactly velocity ``(u_in[y], 0)``);
3. solid cells -> rest equilibrium ``w_i``; fluid cells collide: BGK ``f = g - omega (g - f_eq)`` or TRT
   ``f = g - omega (g^+ - f_eq^+) - omega^- (g^- - f_eq^-)``, ``Lambda = (1/omega - 1/2)(1/omega^- - 1/2)``;
   optionally with the Smagorinsky eddy-viscosity rate (constant C = ``smagorinsky`` > 0) in place of omega.

``f_eq_i = w_i rho (1 + 3 c_i.u + 4.5 (c_i.u)^2 - 1.5 u.u)``; kinematic viscosity ``nu = (1/omega - 1/2) / 3``.
"""

from __future__ import annotations

import torch

# Velocities 0 rest, 1 E, 2 N, 3 W, 4 S, 5 NE, 6 NW, 7 SW, 8 SE ("N" = +y = increasing row index).
CX = (0, 1, 0, -1, 0, 1, -1, -1, 1)
CY = (0, 0, 1, 0, -1, 1, 1, -1, -1)
OPPOSITE = (0, 3, 4, 1, 2, 7, 8, 5, 6)
MIRROR_Y = (0, 1, 4, 3, 2, 8, 7, 6, 5)
WEIGHTS = (4 / 9, 1 / 9, 1 / 9, 1 / 9, 1 / 9, 1 / 36, 1 / 36, 1 / 36, 1 / 36)

X_BOUNDARIES = ("periodic", "inflow_outflow")
Y_BOUNDARIES = ("periodic", "no_slip", "free_slip")
COLLISIONS = ("bgk", "trt")


def _lattice(like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``c_x, c_y, w`` as ``[9, 1, 1]`` tensors matching ``like``'s dtype and device."""
    kw = dict(dtype=like.dtype, device=like.device)
    return tuple(torch.tensor(v, **kw)[:, None, None] for v in (CX, CY, WEIGHTS))


def equilibrium(rho: torch.Tensor, ux: torch.Tensor, uy: torch.Tensor) -> torch.Tensor:
    """``f_eq [..., 9, H, W]`` from ``rho, ux, uy [..., H, W]``."""
    cx, cy, w = _lattice(rho)
    cu = cx * ux[..., None, :, :] + cy * uy[..., None, :, :]
    usq = (ux * ux + uy * uy)[..., None, :, :]
    return w * rho[..., None, :, :] * (1 + 3 * cu + 4.5 * cu * cu - 1.5 * usq)


def macroscopic(f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Density and velocity ``rho, ux, uy [..., H, W]`` of populations ``f [..., 9, H, W]``."""
    cx, cy, _ = _lattice(f)
    rho = f.sum(-3)
    return rho, (cx * f).sum(-3) / rho, (cy * f).sum(-3) / rho


def trt_omega_minus(omega: torch.Tensor, magic: float) -> torch.Tensor:
    """TRT odd-moment relaxation rate from ``omega`` (= omega^+) and ``Lambda = magic``."""
    return 1 / (magic / (1 / omega - 0.5) + 0.5)


def _shift(a: torch.Tensor, cx: int, cy: int, periodic_x: bool) -> torch.Tensor:
    """``a[..., y - cy, x - cx]`` with y periodic and x periodic or clamped to ``[0, W-1]``."""
    a = torch.roll(a, cy, dims=-2)
    out = torch.roll(a, cx, dims=-1)
    if not periodic_x and cx != 0:
        edge = 0 if cx > 0 else -1  # the column whose source lies outside: clamp the source to itself
        out[..., edge] = a[..., edge]
    return out


def stream(f: torch.Tensor, solid: torch.Tensor, x_boundary: str, y_boundary: str) -> torch.Tensor:
    """Pull streaming with the boundary rules of step 1; ``f [n, 9, H, W]``, ``solid [n, H, W]`` bool."""
    periodic_x = x_boundary == "periodic"
    g = torch.empty_like(f)
    for i in range(9):
        g[:, i] = _shift(f[:, i], CX[i], CY[i], periodic_x)
        from_solid = _shift(solid, CX[i], CY[i], periodic_x)
        bounce = f[:, OPPOSITE[i]]
        g[:, i] = torch.where(from_solid, bounce, g[:, i])
        if y_boundary == "periodic" or CY[i] == 0:
            continue
        row = 0 if CY[i] > 0 else -1  # the wall row whose source lies outside the channel
        if y_boundary == "no_slip":
            g[:, i, row] = bounce[:, row]
        else:  # free slip: the mirror population, shifted along x only (bounce-back if it sits in a solid)
            mirrored = _shift(f[:, MIRROR_Y[i]], CX[i], 0, periodic_x)[:, row]
            mirror_solid = _shift(solid, CX[i], 0, periodic_x)[:, row]
            g[:, i, row] = torch.where(mirror_solid, bounce[:, row], mirrored)
    return g


def zou_he_inlet(g: torch.Tensor, u_in: torch.Tensor) -> torch.Tensor:
    """``g [n, 9, H, W]`` with the unknown populations (E, NE, SE) of column x = 0 set by Zou-He for
    inlet velocity ``(u_in [n, H], 0)``."""
    g = g.clone()
    c = g[..., 0]  # [n, 9, H]
    rho = (c[:, 0] + c[:, 2] + c[:, 4] + 2 * (c[:, 3] + c[:, 6] + c[:, 7])) / (1 - u_in)
    ru = rho * u_in
    c[:, 1] = c[:, 3] + (2 / 3) * ru
    c[:, 5] = c[:, 7] - 0.5 * (c[:, 2] - c[:, 4]) + (1 / 6) * ru
    c[:, 8] = c[:, 6] + 0.5 * (c[:, 2] - c[:, 4]) + (1 / 6) * ru
    return g


def smagorinsky_omega(g, feq, rho, omega, smagorinsky: float) -> torch.Tensor:
    """Per-cell relaxation rate ``[n, 1, H, W]`` of the Smagorinsky model (Hou et al. 1996):
    ``tau = (tau0 + sqrt(tau0^2 + 18 sqrt(2) C^2 |Pi| / rho)) / 2``, ``Pi = sum_i c_i c_i (g_i - f_eq_i)``."""
    cx, cy, _ = _lattice(g)
    neq = g - feq
    pxx, pyy, pxy = ((a * b * neq).sum(1) for a, b in ((cx, cx), (cy, cy), (cx, cy)))
    pi = torch.sqrt(pxx * pxx + pyy * pyy + 2 * pxy * pxy)
    tau0 = 1 / omega
    return (2 / (tau0 + torch.sqrt(tau0 * tau0 + 18 * 2**0.5 * smagorinsky**2 * pi / rho)))[:, None]


def collide(g: torch.Tensor, omega: torch.Tensor, collision: str, magic: float, smagorinsky: float) -> torch.Tensor:
    """BGK or TRT relaxation of ``g [n, 9, H, W]`` with per-environment ``omega [n]``; with ``smagorinsky``
    (C) > 0 the rate is the per-cell eddy-viscosity one."""
    rho, ux, uy = macroscopic(g)
    feq = equilibrium(rho, ux, uy)
    w = omega.to(g.dtype)[:, None, None, None]
    if smagorinsky > 0:
        w = smagorinsky_omega(g, feq, rho, w[:, 0], smagorinsky)
    if collision == "bgk":
        return g - w * (g - feq)
    wm = trt_omega_minus(w, magic)
    g_opp, feq_opp = g[:, list(OPPOSITE)], feq[:, list(OPPOSITE)]
    sym = 0.5 * ((g + g_opp) - (feq + feq_opp))
    anti = 0.5 * ((g - g_opp) - (feq - feq_opp))
    return g - w * sym - wm * anti


def lbm_step(
    f: torch.Tensor,
    omega: torch.Tensor,
    solid: torch.Tensor,
    u_in: torch.Tensor,
    steps: int = 1,
    collision: str = "trt",
    magic: float = 0.25,
    smagorinsky: float = 0.0,
    x_boundary: str = "inflow_outflow",
    y_boundary: str = "free_slip",
) -> torch.Tensor:
    """``steps`` fused steps. ``f [n, 9, H, W]``, ``omega [n]``, ``solid [n, H, W]`` bool, ``u_in [n, H]``."""
    solid = solid.bool()
    rest = torch.tensor(WEIGHTS, dtype=f.dtype, device=f.device)[None, :, None, None]
    for _ in range(steps):
        g = stream(f, solid, x_boundary, y_boundary)
        if x_boundary == "inflow_outflow":
            g = zou_he_inlet(g, u_in.to(f.dtype))
        f = torch.where(solid[:, None], rest, collide(g, omega, collision, magic, smagorinsky))
    return f
