"""The interface every physical system implements.

A system is a frozen dataclass of solver *settings* (resolution, viscosity, time step, ...); the
*environment parameters* (``param_names``, e.g. ``Re``) vary per trajectory and are passed to
``simulate`` as a ``[n, P]`` tensor, one row per trajectory, so one call simulates every
environment x trajectory of a dataset.

Shapes:
    params      [n, P]                      P = len(param_names)
    initial     [n, len(initial_channels), H, W]       (ODE systems: [n, 2])
    trajectory  [n, T+1, len(channel_names), H, W]     frame 0 = initial state, frames dt_frame apart
                (ODE systems: [n, T+1, 2])
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any, ClassVar

import torch


class SolverInstability(ValueError):
    """Parameters outside the solver's stable range, or a non-finite state appearing mid-run."""


@dataclasses.dataclass(frozen=True)
class System(abc.ABC):
    """Base class; subclasses are frozen dataclasses whose fields are solver settings."""

    name: ClassVar[str]
    param_names: ClassVar[tuple[str, ...]]
    channel_names: ClassVar[tuple[str, ...]]
    initial_channels: ClassVar[tuple[str, ...]]

    # ---- construction ---------------------------------------------------------------------------
    @classmethod
    def from_overrides(cls, **overrides: Any) -> System:
        valid = {f.name for f in dataclasses.fields(cls)}
        unknown = set(overrides) - valid
        if unknown:
            raise ValueError(f"{cls.name}: unknown setting(s) {sorted(unknown)} (valid: {sorted(valid)})")
        return cls(**overrides)

    def settings(self) -> dict[str, Any]:
        """Solver settings as plain data (stored in dataset attributes)."""
        return dataclasses.asdict(self)

    # ---- geometry -------------------------------------------------------------------------------
    @property
    @abc.abstractmethod
    def dt_frame(self) -> float:
        """Physical time between saved frames."""

    @property
    def grid(self) -> tuple[int, ...]:
        """Saved grid ``(H, W)``; ``()`` for ODE systems."""
        return ()

    @property
    def domain(self) -> tuple[tuple[float, float], ...]:
        """``((x_min, x_max), (y_min, y_max))``; ``()`` for ODE systems."""
        return ()

    def coordinates(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Grid-point coordinates ``(X, Y)``, each ``[H, W]`` (x along W, y along H),
        for a periodic domain the points ``x_min + i * L / W``."""
        if not self.grid:
            raise ValueError(f"{self.name} is an ODE system and has no spatial coordinates")
        (x0, x1), (y0, y1) = self.domain
        h, w = self.grid
        x = x0 + (x1 - x0) * torch.arange(w, dtype=torch.float64) / w
        y = y0 + (y1 - y0) * torch.arange(h, dtype=torch.float64) / h
        Y, X = torch.meshgrid(y, x, indexing="ij")
        return X, Y

    # ---- simulation -----------------------------------------------------------------------------
    @abc.abstractmethod
    def random_initial(self, n: int, seed: int = 0, device: torch.device | str | None = None) -> torch.Tensor:
        """``n`` seeded random initial states ``[n, len(initial_channels), H, W]`` (ODE: ``[n, 2]``)."""

    @abc.abstractmethod
    def simulate(
        self,
        params: torch.Tensor,
        initial: torch.Tensor | None = None,
        n_frames: int = 10,
        seed: int = 0,
        backend: str = "auto",
        device: torch.device | str | None = None,
    ) -> torch.Tensor:
        """Simulate one trajectory per row of ``params``; returns ``[n, n_frames+1, C, H, W]`` float32."""

    def check_stability(self, params: torch.Tensor) -> None:
        """Raise ``SolverInstability`` naming the environment, value and limit when ``params`` would be
        unstable for this solver's settings. Default: no constraint beyond finiteness."""

    # ---- validation shared by all systems ---------------------------------------------------------
    def validate_params(self, params: Any) -> torch.Tensor:
        """``params`` as a float64 ``[n, P]`` tensor, checked for shape, finiteness and stability."""
        p = torch.as_tensor(params, dtype=torch.float64)
        if p.dim() == 1 and len(self.param_names) == 1:
            p = p[:, None]
        if p.dim() != 2 or p.shape[1] != len(self.param_names):
            raise ValueError(
                f"{self.name}: params must have shape [n, {len(self.param_names)}] "
                f"(columns {', '.join(self.param_names)}), got {tuple(p.shape)}"
            )
        if p.shape[0] == 0:
            raise ValueError(f"{self.name}: params is empty; pass at least one environment row")
        bad = ~torch.isfinite(p).all(dim=1)
        if bad.any():
            i = int(bad.nonzero()[0])
            raise ValueError(f"{self.name}: params row {i} is not finite: {p[i].tolist()}")
        self.check_stability(p)
        return p

    def check_frames(self, n_frames: int) -> None:
        if not isinstance(n_frames, int) or n_frames < 0:
            raise ValueError(f"{self.name}: n_frames must be an int >= 0, got {n_frames!r}")

    def check_finite_state(self, state: torch.Tensor, params: torch.Tensor, t: float) -> None:
        """Raise ``SolverInstability`` when any trajectory's state became NaN/inf (named by row)."""
        flat = state.reshape(state.shape[0], -1)
        bad = ~torch.isfinite(flat).all(dim=1)
        if bad.any():
            i = int(bad.nonzero()[0])
            env = dict(zip(self.param_names, params[i].tolist()))
            raise SolverInstability(
                f"{self.name}: trajectory {i} ({env}) became non-finite at t={t:.4g}; "
                "reduce the time step or move the parameters into the stable range"
            )
