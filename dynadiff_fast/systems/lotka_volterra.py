"""Lotka-Volterra predator-prey ODE (App. H.6, Kirchmeyer et al. 2022), batched classical RK4.

    dx/dt = alpha x - beta x y,      dy/dt = delta x y - gamma y

params ``(beta, delta)`` per row; ``alpha = gamma = 0.5`` settings. Orbits are closed: every
trajectory conserves ``V = delta x - gamma ln x + beta y - alpha ln y`` (the test's invariant), so
there is no attractor and the default ``burn_in`` is 0. Initial states uniform in
``[ic_low, ic_high]^2`` (paper: [1, 3]). State ``[n, 2]`` = (prey x, predator y).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch

from dynadiff_fast.profiling import nvtx_range
from dynadiff_fast.systems import spectral
from dynadiff_fast.systems.base import SolverInstability, System

RK4_REAL_LIMIT = 2.78


@dataclasses.dataclass(frozen=True)
class LotkaVolterra(System):
    """Lotka-Volterra; params ``(beta, delta)``; trajectories ``[n, T+1, 2]``.

    Paper settings (App. H.6): dt_frame 0.1, T 10 (100 frames), beta, delta in [0.5, 1.0] (11 each),
    alpha = gamma = 0.5, initial states uniform in [1, 3]^2.

    Settings: alpha, gamma, dt_frame, substeps (RK4 steps per frame), burn_in, ic_low, ic_high, dtype.
    """

    name: ClassVar[str] = "lotka_volterra"
    param_names: ClassVar[tuple[str, ...]] = ("beta", "delta")
    channel_names: ClassVar[tuple[str, ...]] = ("x", "y")
    initial_channels: ClassVar[tuple[str, ...]] = ("x", "y")

    alpha: float = 0.5
    gamma: float = 0.5
    dt_frame: float = 0.1
    substeps: int = 10
    burn_in: float = 0.0
    ic_low: float = 1.0
    ic_high: float = 3.0
    dtype: str = "float32"

    def __post_init__(self) -> None:
        for name in ("alpha", "gamma", "dt_frame", "ic_low"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{self.name}: {name} must be > 0, got {getattr(self, name)}")
        if not self.ic_high > self.ic_low:
            raise ValueError(f"{self.name}: ic_high must be > ic_low={self.ic_low}, got {self.ic_high}")
        if not isinstance(self.substeps, int) or self.substeps < 1:
            raise ValueError(f"{self.name}: substeps must be an int >= 1, got {self.substeps!r}")
        if not self.burn_in >= 0:
            raise ValueError(f"{self.name}: burn_in must be >= 0, got {self.burn_in}")
        spectral.dtype_of(self.dtype)

    def check_stability(self, params: torch.Tensor) -> None:
        bad = ~(params > 0).all(dim=1)
        if bad.any():
            i = int(bad.nonzero()[0])
            raise SolverInstability(
                f"{self.name}: environment row {i} {dict(zip(self.param_names, params[i].tolist()))}: beta and delta "
                "must be > 0 (otherwise the populations grow without bound)"
            )
        # Linearised rates along orbits through [ic_low, ic_high]^2 stay below ~ alpha + gamma + (beta + delta) *
        # peak population; the peak of an orbit is bounded through the invariant, here by a generous 10 ic_high.
        dt = self.dt_frame / self.substeps
        rate = self.alpha + self.gamma + (params[:, 0] + params[:, 1]) * 10 * self.ic_high
        courant = dt * rate / RK4_REAL_LIMIT
        bad = courant > spectral.COURANT_LIMIT
        if bad.any():
            i = int(bad.nonzero()[0])
            raise SolverInstability(
                f"{self.name}: environment row {i} {dict(zip(self.param_names, params[i].tolist()))}: step "
                f"dt={dt:.3g} times the rate bound {float(rate[i]):.3g} is {float(courant[i] * RK4_REAL_LIMIT):.3g} "
                f"> RK4 limit {RK4_REAL_LIMIT * spectral.COURANT_LIMIT}; raise substeps"
            )

    def random_initial(self, n: int, seed: int = 0, device=None) -> torch.Tensor:
        """``[n, 2]`` states uniform in ``[ic_low, ic_high]^2``."""
        gen = torch.Generator().manual_seed(seed)
        x = self.ic_low + (self.ic_high - self.ic_low) * torch.rand(n, 2, generator=gen, dtype=torch.float64)
        return x.to(device=device, dtype=spectral.dtype_of(self.dtype))

    def rhs(self, state: torch.Tensor, beta: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        """``d(x, y)/dt`` for ``state [n, 2]``, ``beta, delta [n]``."""
        x, y = state[:, 0], state[:, 1]
        return torch.stack([self.alpha * x - beta * x * y, delta * x * y - self.gamma * y], dim=1)

    def invariant(self, state: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """``V = delta x - gamma ln x + beta y - alpha ln y`` of ``state [..., 2]``, params ``[n, 2]`` broadcast
        over the leading axis."""
        p = params.to(state.dtype).reshape(params.shape[0], *([1] * (state.dim() - 2)), 2)
        x, y = state[..., 0], state[..., 1]
        beta, delta = p[..., 0], p[..., 1]
        return delta * x - self.gamma * torch.log(x) + beta * y - self.alpha * torch.log(y)

    def simulate(self, params, initial=None, n_frames=100, seed=0, backend="auto", device=None) -> torch.Tensor:
        """``[n, n_frames + 1, 2]`` trajectories; ``backend`` is accepted for the common interface (plain torch)."""
        p = self.validate_params(params)
        self.check_frames(n_frames)
        spectral.check_backend(backend)
        dev = spectral.resolve_device(device, initial)
        dtype = spectral.dtype_of(self.dtype)
        if initial is None:
            state, burn_in = self.random_initial(p.shape[0], seed, dev), self.burn_in
        else:
            state = torch.as_tensor(initial)
            if tuple(state.shape) != (p.shape[0], 2):
                raise ValueError(f"{self.name}: initial must have shape ({p.shape[0]}, 2), got {tuple(state.shape)}")
            if not torch.isfinite(state).all() or not (state > 0).all():
                raise ValueError(f"{self.name}: initial populations must be finite and > 0")
            state, burn_in = state.to(device=dev, dtype=dtype), 0.0
        beta, delta = p[:, 0].to(dev, dtype), p[:, 1].to(dev, dtype)
        dt = self.dt_frame / self.substeps
        for _ in range(round(burn_in / dt)):
            state = self.rk4_step(state, beta, delta, dt)
        frames = [state]
        for k in range(n_frames):
            for _ in range(self.substeps):
                state = self.rk4_step(state, beta, delta, dt)
            self.check_finite_state(state, p, burn_in + (k + 1) * self.dt_frame)
            frames.append(state)
        return torch.stack(frames, dim=1)

    def rk4_step(self, state, beta, delta, dt):
        with nvtx_range("sim/lotka_volterra_step"):
            k1 = self.rhs(state, beta, delta)
            k2 = self.rhs(state + dt / 2 * k1, beta, delta)
            k3 = self.rhs(state + dt / 2 * k2, beta, delta)
            k4 = self.rhs(state + dt * k3, beta, delta)
            return state + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)

    @property
    def grid(self) -> tuple[int, ...]:
        return ()
