"""2-D incompressible Navier-Stokes in vorticity form on a periodic box (pseudo-spectral).

    d_t w + u . grad w = nu lap w + f,     lap psi = -w,     u = (d_y psi, -d_x psi)

``VorticitySystem`` is the solver shared with Kolmogorov flow; ``NavierStokes`` is the paper's
forced system (App. B, after Li et al. 2021 / Kirchmeyer et al. 2022) on ``[0, 1]^2`` with

    f = A (sin(2 pi (x + y + s)) + cos(2 pi (x + y + s)))          params (A, s)

Numerics (the stepper is ``lawson.py``): rfft2 pseudo-spectral, 2/3 dealiasing of the advection
term (quadratic, so the 2/3 rule removes its aliasing exactly), integrating-factor (Lawson) RK4, 4th
order, with the viscous term ``-nu |k|^2`` exact and the forcing precomputed in Fourier space. One RK4
stage is ``inverse FFT -> ns_advection -> rfft2 -> ns_stage`` (the fused ops of ``dynadiff_fast.ops.ns_stage``).
The step is chosen per saved frame from the advective Courant number
``C = dt (max|u|/dx + max|v|/dy) <= cfl`` (the same dt for the whole batch), or fixed by
``substeps``; then a frame whose Courant number exceeds ``spectral.COURANT_LIMIT`` raises
``SolverInstability`` naming the trajectory.

Initial states: Gaussian random fields with covariance ``sigma^2 (-lap + tau^2)^(-alpha)`` (FNO's
``GaussianRF(alpha=2.5, tau=7)``), then ``burn_in`` time units of simulation so saved frames lie
on the attractor. Saved channels: vorticity, u, v.
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import torch

from dynadiff_fast.systems import spectral
from dynadiff_fast.systems.base import SolverInstability
from dynadiff_fast.systems.lawson import LawsonSolver, PseudoSpectralSystem


@dataclasses.dataclass(frozen=True)
class VorticitySystem(PseudoSpectralSystem):
    """Shared settings and solver of the vorticity-form systems.

    Settings:
        resolution: grid points per side (the saved grid is ``resolution x resolution``).
        dt_frame: physical time between saved frames.
        burn_in: time simulated from the random initial state before frame 0 (only when ``initial``
            is None).
        cfl: target Courant number ``dt (max|u|/dx + max|v|/dy)`` of the automatic step.
        substeps: solver steps per frame; 0 picks them per frame from ``cfl``.
        ic_alpha, ic_tau: Gaussian-random-field exponent and inverse length of the initial vorticity.
        dtype: "float32" (default) or "float64" for the whole solve.
    """

    channel_names: ClassVar[tuple[str, ...]] = ("vorticity", "u", "v")
    initial_channels: ClassVar[tuple[str, ...]] = ("vorticity",)
    step_range: ClassVar[str] = "sim/ns_step"

    resolution: int = 64
    dt_frame: float = 0.025
    burn_in: float = 10.0
    cfl: float = 0.5
    substeps: int = 0
    ic_alpha: float = 2.5
    ic_tau: float = 7.0
    dtype: str = "float32"

    def __post_init__(self) -> None:
        spectral.validate_settings(self, ("dt_frame", "cfl", "ic_tau"))

    # ---- what a concrete system defines ----------------------------------------------------------
    def diffusivity(self, params: torch.Tensor) -> torch.Tensor:
        """Viscosity per row ``[n]`` or shared ``[1]`` (float64)."""
        raise NotImplementedError

    def forcing(self, params: torch.Tensor) -> torch.Tensor:
        """Forcing field ``[n or 1, H, W]`` float64 on the CPU."""
        raise NotImplementedError

    # ---- stability -------------------------------------------------------------------------------
    def check_stability(self, params: torch.Tensor) -> None:
        """Viscosity must be positive. The advective (CFL) limit depends on the state, not only on the
        parameters: it is checked before every saved frame against the actual velocity."""
        nu = self.diffusivity(params)
        if not (nu > 0).all():
            i = int((~(nu > 0)).nonzero()[0]) if nu.numel() > 1 else 0
            env = dict(zip(self.param_names, params[i].tolist()))
            raise SolverInstability(
                f"{self.name}: environment row {i} ({env}) gives viscosity {float(nu[i]):.4g}; "
                "it must be > 0 (negative diffusion grows without bound)"
            )

    # ---- initial states --------------------------------------------------------------------------
    def random_initial(self, n: int, seed: int = 0, device=None) -> torch.Tensor:
        """``[n, 1, H, W]`` Gaussian random vorticity fields (see the module docstring)."""
        gen = torch.Generator().manual_seed(seed)
        w = spectral.gaussian_random_field(n, self.spectral_grid(), self.ic_alpha, self.ic_tau, generator=gen)
        return w.to(device=device, dtype=spectral.dtype_of(self.dtype))

    def make_solver(self, params, device, backend, initial) -> LawsonSolver:
        return _VorticitySolver(self, params, device, backend, initial)


class _VorticitySolver(LawsonSolver):
    """The vorticity equation for the Lawson stepper; ``state`` is the vorticity spectrum ``[n, 1, H, Wr]``.

    The stage hands the advection its physical ``(u, v, w_x, w_y)``: real ``[n, 4, H, W]`` ("half"),
    or complex ``[n, 2, H, W]`` = ``(u - i v, w_x - i w_y)`` ("packed", see ``ops.ns_stage``).
    """

    velocity = True
    # The fused CPU kernel hands the FFTs the packed layout (one forward complex FFT per stage
    # instead of four real inverse ones); the reference and the GPU keep the rfft2 half spectra.
    cpp_layout = "packed"

    def diffusivity(self) -> torch.Tensor:
        return self.system.diffusivity(self.params).to(self.device)

    def forcing_hat(self) -> torch.Tensor:
        g = self.grid
        f_hat = torch.fft.rfft2(self.system.forcing(self.params).to(self.device)) * g.mask.to(torch.float64)
        return f_hat[:, None].to(spectral.complex_of(g.k2.dtype))

    def nonlinear(self, fields: torch.Tensor) -> torch.Tensor:
        return self.advection_fn(fields)

    def velocity_field(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Physical ``(u, v)`` of the current state, each ``[n, H, W]``."""
        if self.layout == "packed":
            return self.phys[:, 0].real, -self.phys[:, 0].imag
        return self.phys[:, 0], self.phys[:, 1]

    def courant_rate(self) -> torch.Tensor:
        """``max|u|/dx + max|v|/dy`` per row of the current state."""
        dy, dx = self.grid.spacing
        u, v = self.velocity_field()
        return u.abs().amax(dim=(-2, -1)) / dx + v.abs().amax(dim=(-2, -1)) / dy

    def frame(self) -> torch.Tensor:
        """Saved channels ``[n, 3, H, W]``: vorticity, u, v."""
        return torch.stack([torch.fft.irfft2(self.state[:, 0], s=self.grid.shape), *self.velocity_field()], dim=1)


@dataclasses.dataclass(frozen=True)
class NavierStokes(VorticitySystem):
    """Forced 2-D Navier-Stokes on ``[0, 1]^2``; params ``(A, s)``, forcing in the module docstring.

    Paper settings (App. B / Table 2): 64x64, dt_frame 0.025, T 50, A in [0.1, 0.3] and s in
    [0, 1] (11 values each). The paper's App. B quotes nu = 0.01; the default here is nu = 1e-3
    (the FNO/Kirchmeyer setting, richer dynamics); set ``viscosity=0.01`` for the paper's text.
    Table 2 lists the domain as [-32, 32]^2, which does not fit the 1-periodic forcing; we use [0, 1]^2.
    """

    name: ClassVar[str] = "navier_stokes"
    param_names: ClassVar[tuple[str, ...]] = ("A", "s")

    viscosity: float = 1e-3

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.viscosity > 0:
            raise ValueError(f"{self.name}: viscosity must be > 0, got {self.viscosity}")

    @property
    def domain(self) -> tuple[tuple[float, float], ...]:
        return ((0.0, 1.0), (0.0, 1.0))

    def diffusivity(self, params):
        return torch.full((1,), float(self.viscosity), dtype=torch.float64)

    def forcing(self, params):
        X, Y = self.coordinates()
        phase = 2 * math.pi * (X + Y + params[:, 1, None, None])
        return params[:, 0, None, None] * (torch.sin(phase) + torch.cos(phase))
