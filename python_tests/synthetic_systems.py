"""Stand-in systems for the tests: small, exactly known dynamics in place of the PDE solvers, each under its own
name, and ``register`` to make one a system of the library for the life of a ``pytest.MonkeyPatch``.

    Advect      u(x, t + 1) = u(x - c, t) on a periodic 16 x 16 grid: an FNO represents it exactly (experts/test_zoo)
    Drift       Advect damped by exp(-|k|^2 / 40) on 12 x 12: exact for a 1-layer FNO (generative/test_vae)
    Relax       u -> 1 at rate k on 12 x 12, and RelaxOther, the same under another name (conftest ``pipeline``)
    Decay       u, w -> 0 at rate k on 6 x 5, unstable for k >= k_max (data/test_dataset)
"""

import dataclasses
import math
from typing import ClassVar

import torch

from dynadiff_fast import systems
from dynadiff_fast.data import presets
from dynadiff_fast.experts import configs
from dynadiff_fast.systems.base import SolverInstability, System

# Every stand-in's row of the experts' table (``expert_config`` is keyed by system name). The zoo takes the channels
# from the dataset, and tiny / bench ignore n_modes and n_layers (small reads n_modes, paper both): the stand-in zoos
# are all tiny, so their experts are those of any 2-D system at tiny with the test's own overrides.
EXPERT_SPEC = dict(channels=1, n_modes=(4, 4), n_layers=2)


def register(mp, cls: type[System], preset: presets.DatasetPreset) -> None:
    """Make ``cls`` the system ``cls.name`` (``get_system``), with ``preset`` as its tiny dataset preset and
    ``EXPERT_SPEC`` as its experts' table row, until ``mp`` (a ``pytest.MonkeyPatch``) is undone."""
    mp.setitem(systems._SYSTEMS, cls.name, (cls.__module__, cls.__qualname__))
    mp.setitem(presets._TINY, cls.name, preset)
    mp.setitem(configs._PAPER, cls.name, EXPERT_SPEC)


@dataclasses.dataclass(frozen=True)
class _Field(System):
    """One channel ``u`` on a ``resolution`` x ``resolution`` grid over ``[0, extent)^2``, frames ``frame_dt`` apart."""

    channel_names = ("u",)
    initial_channels = ("u",)
    frame_dt: ClassVar[float] = 1.0
    extent: ClassVar[float] = 2 * math.pi
    resolution: int = 16

    @property
    def dt_frame(self):
        return self.frame_dt

    @property
    def grid(self):
        return (self.resolution, self.resolution)

    @property
    def domain(self):
        return ((0.0, self.extent), (0.0, self.extent))


@dataclasses.dataclass(frozen=True)
class Advect(_Field):
    """u(x, t + 1) = u(x - c, t) on a periodic 16x16 grid (exact Fourier shift of a band-limited field)."""

    name = "advect"
    param_names = ("c",)
    resolution: int = 16

    def random_initial(self, n, seed=0, device=None):
        g = torch.Generator().manual_seed(seed)
        n_res = self.resolution
        spec = torch.zeros(n, 1, n_res, n_res // 2 + 1, dtype=torch.complex64)
        for ky in (-2, -1, 0, 1, 2):
            for kx in (0, 1, 2):
                spec[:, 0, ky % n_res, kx] = torch.randn(n, dtype=torch.complex64, generator=g)
        return torch.fft.irfft2(spec, s=(n_res, n_res), norm="forward")

    def simulate(self, params, initial=None, n_frames=10, seed=0, backend="auto", device=None):
        p = self.validate_params(params)
        x = self.random_initial(p.shape[0], seed) if initial is None else initial
        kx = torch.fft.rfftfreq(self.resolution, 1.0 / self.resolution)
        phase = torch.exp(-2j * math.pi * kx[None, :] * p[:, :1].float() / self.resolution)  # [n, W//2+1]
        frames = [x]
        for _ in range(n_frames):
            spec = torch.fft.rfft2(frames[-1]) * phase[:, None, None, :]
            frames.append(torch.fft.irfft2(spec, s=x.shape[-2:]))
        return torch.stack(frames, 1).float()


@dataclasses.dataclass(frozen=True)
class Drift(_Field):
    """u(t + 1) = u(x - c, t) damped by exp(-|k|^2 / 40): a Fourier multiplier, exact for a 1-layer FNO."""

    name = "drift"
    param_names = ("c",)
    resolution: int = 12

    def random_initial(self, n, seed=0, device=None):
        g = torch.Generator().manual_seed(seed)
        spec = torch.zeros(n, 1, self.resolution, self.resolution // 2 + 1, dtype=torch.complex64)
        spec[:, 0, :2, :2] = torch.randn(n, 2, 2, dtype=torch.complex64, generator=g)
        spec[:, 0, -1, 1] = torch.randn(n, dtype=torch.complex64, generator=g)
        return torch.fft.irfft2(spec, s=self.grid, norm="forward")

    def simulate(self, params, initial=None, n_frames=10, seed=0, backend="auto", device=None):
        p = self.validate_params(params)
        x = self.random_initial(p.shape[0], seed) if initial is None else initial
        ky = torch.fft.fftfreq(self.resolution, 1.0 / self.resolution)[:, None]
        kx = torch.fft.rfftfreq(self.resolution, 1.0 / self.resolution)[None, :]
        shift = torch.exp(-2j * math.pi * kx * p[:, :1, None].float() / self.resolution)  # [n, 1, W//2+1]
        mult = shift * torch.exp(-(kx**2 + ky**2) / 40.0)
        frames = [x]
        for _ in range(n_frames):
            frames.append(torch.fft.irfft2(torch.fft.rfft2(frames[-1]) * mult[:, None], s=self.grid))
        return torch.stack(frames, 1).float()


@dataclasses.dataclass(frozen=True)
class Relax(_Field):
    """u(t) = 1 + (u0 - 1) exp(-k t) on a 12 x 12 grid (one channel)."""

    name = "relax"
    param_names = ("k",)
    frame_dt = 0.2
    extent = 1.0
    resolution: int = 12

    def random_initial(self, n, seed=0, device=None):
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(n, 1, *self.grid, generator=g)
        return torch.nn.functional.avg_pool2d(x, 3, 1, 1, count_include_pad=False) * 2

    def simulate(self, params, initial=None, n_frames=10, seed=0, backend="auto", device=None):
        p = self.validate_params(params)
        x0 = self.random_initial(p.shape[0], seed) if initial is None else initial
        t = torch.arange(n_frames + 1, dtype=torch.float64) * self.dt_frame
        decay = torch.exp(-p[:, :1] * t[None, :])[:, :, None, None, None]
        return (x0[:, None].double() * decay + (1 - decay)).float()


@dataclasses.dataclass(frozen=True)
class RelaxOther(Relax):
    name = "relax_other"


@dataclasses.dataclass(frozen=True)
class Decay(_Field):
    """u(t) = u0 exp(-k t) on a 6x5 grid; k must be < k_max (a stand-in stability limit)."""

    name = "decay"
    param_names = ("k",)
    channel_names = ("u", "w")
    initial_channels = ("u", "w")
    frame_dt = 0.1
    extent = 1.0
    resolution: int = 6
    k_max: float = 5.0

    @property
    def grid(self):
        return (self.resolution, self.resolution - 1)

    def check_stability(self, params):
        bad = params[:, 0] >= self.k_max
        if bad.any():
            i = int(bad.nonzero()[0])
            raise SolverInstability(f"decay: env row {i}: k={params[i, 0].item()} >= k_max={self.k_max}")

    def random_initial(self, n, seed=0, device=None):
        g = torch.Generator().manual_seed(seed)
        return torch.randn(n, 2, *self.grid, generator=g) + 1.0

    def simulate(self, params, initial=None, n_frames=10, seed=0, backend="auto", device=None):
        p = self.validate_params(params)
        x0 = self.random_initial(p.shape[0], seed) if initial is None else initial
        t = torch.arange(n_frames + 1, dtype=torch.float64) * self.dt_frame
        decay = torch.exp(-p[:, :1] * t[None, :])  # [n, T+1]
        return (x0[:, None].double() * decay[:, :, None, None, None]).float()
