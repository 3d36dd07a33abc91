"""Lambda-Omega reaction-diffusion system (App. B eq. 6, Champion et al. 2019) on ``[-10, 10]^2``.

    u_t = mu lap u + (1 - u^2 - v^2) u + beta (u^2 + v^2) v
    v_t = mu lap v + (1 - u^2 - v^2) v - beta (u^2 + v^2) u          (mu = mu_u = mu_v = 0.5)

In ``z = u + i v``: ``z_t = mu lap z + (1 - (1 + i beta)|z|^2) z`` - a uniform state relaxes to
``|z| = 1`` and rotates with angular speed ``-beta``; random states form spiral waves.

Numerics: pseudo-spectral (rfft2) in space, 2/3 dealiasing of the reaction term (a cubic; its
aliasing beyond 2/3 is below the float32 noise for these smooth fields), integrating-factor RK4
with the diffusion exact (``spectral.py``; the stage combination is the fused ``ns_stage`` op with
``velocity=False``). The explicit reaction sets the step: its Jacobian's spectral radius is below
``rate = 1 + 3 sqrt(1 + beta^2) max|z|^2``, and ``dt * rate / RK4_REAL_LIMIT`` plays the role of the
Courant number (``cfl`` / ``substeps`` as in ``navier_stokes``).

Initial states: ``u`` and ``v`` independent Gaussian random fields (covariance
``(-lap + tau^2)^(-alpha)``), each rescaled to RMS ``ic_amplitude``; then ``burn_in`` time units.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch

from dynadiff_fast.ops import ns_stage as ops
from dynadiff_fast.profiling import nvtx_range
from dynadiff_fast.systems import spectral
from dynadiff_fast.systems.base import System

# |dt * lambda| RK4 tolerates on the negative real axis.
RK4_REAL_LIMIT = 2.78


@dataclasses.dataclass(frozen=True)
class LambdaOmega(System):
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
    def grid(self) -> tuple[int, int]:
        return (self.resolution, self.resolution)

    @property
    def domain(self) -> tuple[tuple[float, float], ...]:
        half = self.length / 2
        return ((-half, half), (-half, half))

    def spectral_grid(self, device=None) -> spectral.SpectralGrid:
        return spectral.SpectralGrid.build(self.grid, (self.length, self.length), spectral.dtype_of(self.dtype), device)

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

    def simulate(self, params, initial=None, n_frames=10, seed=0, backend="auto", device=None) -> torch.Tensor:
        """One trajectory per row of ``params`` ``[n, 1]``: ``[n, n_frames + 1, 2, H, W]`` (u, v)."""
        p = self.validate_params(params)
        self.check_frames(n_frames)
        spectral.check_backend(backend)
        dev = spectral.resolve_device(device, initial)
        if initial is None:
            z0, burn_in = self.random_initial(p.shape[0], seed, dev), self.burn_in
        else:
            z0, burn_in = spectral.check_initial(self, initial, p.shape[0]).to(dev), 0.0
        return spectral.run_frames(_LambdaOmegaSolver(self, p, dev, backend, z0), burn_in, self.dt_frame, n_frames)


def reaction(z: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """``z [n, 2, H, W]`` = (u, v), ``beta [n, 1, 1]`` -> the reaction terms ``[n, 2, H, W]``."""
    u, v = z[:, 0], z[:, 1]
    r2 = u * u + v * v
    a, b = 1 - r2, beta * r2
    return torch.stack([a * u + b * v, a * v - b * u], dim=1)


class _LambdaOmegaSolver:
    """Spectral operators and the running state (``[n, 2, H, Wr]`` spectrum of u, v) of one call."""

    def __init__(self, system: LambdaOmega, params: torch.Tensor, device, backend: str, z0: torch.Tensor):
        self.system, self.params = system, params
        self.grid = g = system.spectral_grid(device)
        self.kx, self.ky = g.kx[0].contiguous(), g.ky[:, 0].contiguous()
        self.beta = params[:, 0].to(device=device, dtype=z0.dtype)[:, None, None]
        self._decay: tuple[float, torch.Tensor] | None = None
        self.state = torch.fft.rfft2(z0) * g.mask
        self.phys = torch.fft.irfft2(self.state, s=g.shape)
        ops.ns_stage(1, self.state, self.state, self.state, self.half_decay(1.0), self.kx, self.ky, g.mask, 1.0,
                     None, False, backend=backend)  # fmt: skip
        self.stage_fn, _ = ops.bind(backend, self.state.device.type)

    def half_decay(self, dt: float) -> torch.Tensor:
        if self._decay is None or self._decay[0] != dt:
            self._decay = (dt, self.grid.integrating_factor(torch.tensor([self.system.mu]), dt))
        return self._decay[1]

    def frame(self) -> torch.Tensor:
        return self.phys

    def advance(self, duration: float, t: float) -> torch.Tensor:
        r2_max = self.phys.square().sum(dim=1).amax(dim=(-2, -1)).to(torch.float64)
        rate = LambdaOmega.reaction_rate(self.params[:, 0].to(r2_max.device), r2_max)
        k = spectral.choose_substeps(self.system, rate, duration, t, self.params)
        dt = duration / k
        E = self.half_decay(dt)
        for _ in range(k):
            with nvtx_range("sim/lambda_omega_step"):
                self.step(E, dt)
        self.system.check_finite_state(self.phys, self.params, t)
        return self.phys

    def step(self, E: torch.Tensor, dt: float) -> None:
        acc = self.state  # not read by stage 1
        for stage in (1, 2, 3, 4):
            q_hat = torch.fft.rfft2(reaction(self.phys, self.beta))
            acc, nxt = self.stage_fn(
                stage,
                q_hat,
                self.state,
                acc,
                E,
                self.kx,
                self.ky,
                self.grid.mask,
                dt,
                None,
                False,
                "half",
                self.grid.shape[1],
            )
            self.phys = torch.fft.irfft2(nxt, s=self.grid.shape)
        self.state = acc


__all__ = ["LambdaOmega", "reaction"]
