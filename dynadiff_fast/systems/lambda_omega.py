"""Lambda-Omega reaction-diffusion system (App. B eq. 6, Champion et al. 2019) on ``[-10, 10]^2``.

    u_t = mu lap u + (1 - u^2 - v^2) u + beta (u^2 + v^2) v
    v_t = mu lap v + (1 - u^2 - v^2) v - beta (u^2 + v^2) u          (mu = mu_u = mu_v = 0.5)

In ``z = u + i v``: ``z_t = mu lap z + (1 - (1 + i beta)|z|^2) z`` - a uniform state relaxes to
``|z| = 1`` and rotates with angular speed ``-beta``; random states form spiral waves.

Numerics: pseudo-spectral (rfft2) in space, 2/3 dealiasing of the reaction term (a cubic; its
aliasing beyond 2/3 is below the float32 noise for these smooth fields), integrating-factor
(Lawson) RK4, 4th order, with the diffusion exact (``lawson.py``: linear operator ``-mu |k|^2`` on
both fields, nonlinear term the reaction, no forcing; the stage op runs with ``velocity=False``).
The explicit reaction sets the step: its Jacobian's spectral radius is below
``rate = 1 + 3 sqrt(1 + beta^2) max|z|^2``, and ``dt * rate / RK4_REAL_LIMIT`` plays the role of the
Courant number (``cfl`` / ``substeps`` as in ``navier_stokes``).

Initial states: ``u`` and ``v`` independent Gaussian random fields (covariance
``(-lap + tau^2)^(-alpha)``), each rescaled to RMS ``ic_amplitude``; then ``burn_in`` time units.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch

from dynadiff_fast.systems import spectral
from dynadiff_fast.systems.lawson import LawsonSolver, PseudoSpectralSystem

# |dt * lambda| RK4 tolerates on the negative real axis.
RK4_REAL_LIMIT = 2.78


@dataclasses.dataclass(frozen=True)
class LambdaOmega(PseudoSpectralSystem):
    """Lambda-Omega system; params ``(beta,)``; saved channels u, v.

    Paper settings (Table 2): 64x64 on [-10, 10]^2, dt_frame 0.04, T 40, beta in [1.0, 1.5] (51).

    Settings:
        resolution, length (domain [-length/2, length/2]^2), mu (diffusion of u and v),
        dt_frame, burn_in, cfl, substeps (0 = automatic), ic_alpha, ic_tau, ic_amplitude, dtype.
    """

    name: ClassVar[str] = "lambda_omega"
    param_names: ClassVar[tuple[str, ...]] = ("beta",)
    channel_names: ClassVar[tuple[str, ...]] = ("u", "v")
    initial_channels: ClassVar[tuple[str, ...]] = ("u", "v")
    step_range: ClassVar[str] = "sim/lambda_omega_step"

    resolution: int = 64
    length: float = 20.0
    mu: float = 0.5
    dt_frame: float = 0.04
    burn_in: float = 10.0
    cfl: float = 0.5
    substeps: int = 0
    ic_alpha: float = 2.0
    ic_tau: float = 1.0
    ic_amplitude: float = 1.0
    dtype: str = "float32"

    def __post_init__(self) -> None:
        spectral.validate_settings(self, ("length", "mu", "dt_frame", "cfl", "ic_tau", "ic_amplitude"))

    @property
    def domain(self) -> tuple[tuple[float, float], ...]:
        half = self.length / 2
        return ((-half, half), (-half, half))

    @staticmethod
    def reaction_rate(beta: torch.Tensor, r2_max: torch.Tensor | float) -> torch.Tensor:
        """Courant number per unit step: ``(1 + 3 sqrt(1 + beta^2) max|z|^2) / RK4_REAL_LIMIT``."""
        return (1 + 3 * torch.sqrt(1 + beta**2) * r2_max) / RK4_REAL_LIMIT

    def check_stability(self, params: torch.Tensor) -> None:
        # A-priori bound for a fixed step: the attractor has |z| = 1; allow peaks of |z|^2 = 2.
        spectral.check_static_courant(self, self.reaction_rate(params[:, 0], 2.0), params)

    def random_initial(self, n: int, seed: int = 0, device=None) -> torch.Tensor:
        """``[n, 2, H, W]``: u, v independent Gaussian random fields with RMS ``ic_amplitude``."""
        gen = torch.Generator().manual_seed(seed)
        z = spectral.gaussian_random_field(
            n, self.spectral_grid(), self.ic_alpha, self.ic_tau, sigma=1.0, channels=2, generator=gen
        )
        z = z * (self.ic_amplitude / z.square().mean(dim=(-2, -1), keepdim=True).sqrt())
        return z.to(device=device, dtype=spectral.dtype_of(self.dtype))

    def make_solver(self, params, device, backend, initial) -> LawsonSolver:
        return _LambdaOmegaSolver(self, params, device, backend, initial)


def reaction(z: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """``z [n, 2, H, W]`` = (u, v), ``beta [n, 1, 1]`` -> the reaction terms ``[n, 2, H, W]``."""
    u, v = z[:, 0], z[:, 1]
    r2 = u * u + v * v
    a, b = 1 - r2, beta * r2
    return torch.stack([a * u + b * v, a * v - b * u], dim=1)


class _LambdaOmegaSolver(LawsonSolver):
    """The Lambda-Omega equation for the Lawson stepper; ``state`` is the ``[n, 2, H, Wr]`` spectrum of u, v."""

    def __init__(self, system: LambdaOmega, params: torch.Tensor, device, backend: str, z0: torch.Tensor):
        self.beta = params[:, 0].to(device=device, dtype=z0.dtype)[:, None, None]
        super().__init__(system, params, device, backend, z0)

    def diffusivity(self) -> torch.Tensor:
        # torch's default dtype (float32) rounds mu before the float64 exponential; kept as the
        # trajectories generated so far were.
        return torch.tensor([self.system.mu])

    def nonlinear(self, fields: torch.Tensor) -> torch.Tensor:
        return reaction(fields, self.beta)

    def courant_rate(self) -> torch.Tensor:
        r2_max = self.phys.square().sum(dim=1).amax(dim=(-2, -1)).to(torch.float64)
        return LambdaOmega.reaction_rate(self.params[:, 0].to(r2_max.device), r2_max)

    def frame(self) -> torch.Tensor:
        """Saved channels ``[n, 2, H, W]``: u, v (the stage input fields, in the "half" layout)."""
        return self.phys


__all__ = ["LambdaOmega", "reaction"]
