"""Kolmogorov flow: 2-D Navier-Stokes with sinusoidal forcing on ``[-pi, pi]^2`` (App. B, Page et al. 2024).

    d_t w + u . grad w = Re^-1 lap w - n cos(n y),     lap psi = -w,     u = (d_y psi, -d_x psi)

param ``Re`` (one per environment row), ``n = forcing_wavenumber`` (3). Same solver as
``navier_stokes.VorticitySystem`` (pseudo-spectral, 2/3 dealiasing, the integrating-factor RK4 of
``lawson.py`` with the viscous term ``-|k|^2 / Re`` exact, CFL-chosen step). The laminar fixed
point is ``w = -(Re/n) cos(n y)`` (its advection vanishes), unstable at the paper's Re in
[50, 250], so trajectories from random initial states become turbulent.
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import torch

from dynadiff_fast.systems import spectral
from dynadiff_fast.systems.navier_stokes import VorticitySystem


@dataclasses.dataclass(frozen=True)
class Kolmogorov(VorticitySystem):
    """Kolmogorov flow; params ``(Re,)``.

    Paper settings (Table 2): 64x64 on [-pi, pi]^2, dt_frame 0.2, T 40, Re in [50, 250] (51 values).
    ``forcing_wavenumber`` n = 3. Other settings: see ``VorticitySystem``.
    """

    name: ClassVar[str] = "kolmogorov"
    param_names: ClassVar[tuple[str, ...]] = ("Re",)
    step_range: ClassVar[str] = "sim/kolmogorov_step"

    dt_frame: float = 0.2
    burn_in: float = 20.0
    forcing_wavenumber: int = 3

    def __post_init__(self) -> None:
        super().__post_init__()
        kmax = spectral.dealias_cutoff(self.resolution)
        if not isinstance(self.forcing_wavenumber, int) or not 1 <= self.forcing_wavenumber <= kmax:
            raise ValueError(
                f"{self.name}: forcing_wavenumber must be an int in [1, {kmax}] (the modes the 2/3 rule keeps at "
                f"resolution {self.resolution}), got {self.forcing_wavenumber!r}"
            )

    @property
    def domain(self) -> tuple[tuple[float, float], ...]:
        return ((-math.pi, math.pi), (-math.pi, math.pi))

    def diffusivity(self, params):
        return 1.0 / params[:, 0]

    def forcing(self, params):
        n = self.forcing_wavenumber
        _, Y = self.coordinates()
        return (-n * torch.cos(n * Y))[None]

    def laminar(self, Re: float) -> torch.Tensor:
        """The steady laminar vorticity ``-(Re/n) cos(n y)`` ``[H, W]`` (float64)."""
        n = self.forcing_wavenumber
        _, Y = self.coordinates()
        return -(Re / n) * torch.cos(n * Y)
