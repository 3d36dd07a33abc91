"""Expert architectures per system and preset (paper App. C, Table 3).

Every PDE expert is a neuraloperator ``FNO`` mapping the standardised frame ``x_t`` ``[B, C, H, W]``
to ``x_{t+1}``, rolled out autoregressively; the grid positional embedding is neuraloperator's own
(``positional_embedding="grid"``: two channels of coordinates in [0, 1) appended before lifting).
The Lotka–Volterra expert is the paper's App. H.6 model: a 2-layer tanh MLP vector field ``f(x)``,
``dx/dt = f(x)``; the expert (``MLPExpert``) steps it by one RK4 step of the frame spacing ``dt``.

    cfg = expert_config("kolmogorov", "tiny")        # ExpertConfig
    model = cfg.build()                               # neuralop.models.FNO
    model = make_expert("cylinder_flow", "paper")     # same, in one call

Presets: ``tiny`` (one CPU core, minutes, 32x32 grids), ``small``, ``paper`` (Table 3).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dynadiff_fast import config as config_mod
from dynadiff_fast.config import PRESETS, replace_checked

SKIP_TYPES = ("linear", "identity", "soft-gating", None)

# neuraloperator FNO keyword arguments that BatchedFNO reproduces (the ExpertConfig fields), and the
# value every other FNO argument must keep (neuraloperator's default) for a module to be supported.
_FIXED_FNO_KWARGS: dict[str, Any] = {
    "non_linearity": F.gelu,
    "norm": None,
    "complex_data": False,
    "channel_mlp_dropout": 0,
    "resolution_scaling_factor": None,
    "domain_padding": None,
    "fno_block_precision": "full",
    "stabilizer": None,
    "max_n_modes": None,
    "factorization": None,
    "separable": False,
}


class _StoredConfig:
    """An expert config as the plain dict a manifest stores, and back (unknown fields raise, naming the valid
    ones)."""

    def to_dict(self) -> dict[str, Any]:
        return config_mod.to_dict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]):
        return config_mod.build(cls, d, "expert_config")


def config_from_dict(d: dict[str, Any]) -> ExpertConfig | MLPExpertConfig:
    """The expert config stored in a manifest: an ``MLPExpertConfig`` when it has ``state_dim`` (the ODE experts'
    field), else an ``ExpertConfig``."""
    return (MLPExpertConfig if "state_dim" in d else ExpertConfig).from_dict(d)


@dataclass(frozen=True)
class ExpertConfig(_StoredConfig):
    """A 2-D neuraloperator FNO expert; every field is an ``FNO(...)`` keyword argument.

    Args:
        in_channels / out_channels: field channels C of the system (the expert maps x_t -> x_{t+1}).
        hidden_channels: FNO width.
        n_modes: Fourier modes kept along (H, W); along W neuraloperator keeps ``n_modes[1] // 2 + 1``
            rFFT modes, along H the ``n_modes[0]`` frequencies ``-n//2 .. (n+1)//2 - 1``.
        n_layers: number of Fourier layers.
        lifting_channel_ratio / projection_channel_ratio: hidden width of the 2-layer lifting /
            projection channel MLPs as a multiple of ``hidden_channels`` (lifting ratio 0: one linear layer).
        positional_embedding: "grid" (neuraloperator's grid embedding) or None.
        use_channel_mlp / channel_mlp_expansion / channel_mlp_skip / fno_skip / preactivation:
            FNO block options, neuraloperator's meaning and defaults.
    """

    in_channels: int
    out_channels: int
    hidden_channels: int
    n_modes: tuple[int, int]
    n_layers: int = 4
    lifting_channel_ratio: float = 2
    projection_channel_ratio: float = 2
    positional_embedding: str | None = "grid"
    use_channel_mlp: bool = True
    channel_mlp_expansion: float = 0.5
    channel_mlp_skip: str | None = "soft-gating"
    fno_skip: str | None = "linear"
    preactivation: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "n_modes", tuple(int(m) for m in self.n_modes))
        for name in ("in_channels", "out_channels", "hidden_channels", "n_layers"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"ExpertConfig.{name}: expected an integer >= 1, got {value!r}")
        if len(self.n_modes) != 2 or min(self.n_modes) < 1:
            raise ValueError(f"ExpertConfig.n_modes: expected two integers >= 1 (2-D FNO), got {self.n_modes}")
        if self.positional_embedding not in ("grid", None):
            raise ValueError(
                f"ExpertConfig.positional_embedding: expected 'grid' or None, got {self.positional_embedding!r}"
            )
        for name in ("channel_mlp_skip", "fno_skip"):
            if getattr(self, name) not in SKIP_TYPES:
                raise ValueError(f"ExpertConfig.{name}: expected one of {SKIP_TYPES}, got {getattr(self, name)!r}")
        if self.lifting_channel_ratio < 0 or self.projection_channel_ratio <= 0:
            raise ValueError(
                "ExpertConfig: lifting_channel_ratio must be >= 0 and projection_channel_ratio > 0, got "
                f"{self.lifting_channel_ratio} and {self.projection_channel_ratio}"
            )
        if int(self.projection_channel_ratio * self.hidden_channels) < 1:
            raise ValueError("ExpertConfig: projection_channel_ratio * hidden_channels must be >= 1")
        if self.use_channel_mlp and round(self.hidden_channels * self.channel_mlp_expansion) < 1:
            raise ValueError("ExpertConfig: round(hidden_channels * channel_mlp_expansion) must be >= 1")

    # -- derived sizes (neuraloperator's rules) ------------------------------------------------------
    @property
    def lifting_channels(self) -> int:
        return int(self.lifting_channel_ratio * self.hidden_channels)

    @property
    def projection_channels(self) -> int:
        return int(self.projection_channel_ratio * self.hidden_channels)

    @property
    def channel_mlp_channels(self) -> int:
        return round(self.hidden_channels * self.channel_mlp_expansion)

    @property
    def weight_modes(self) -> tuple[int, int]:
        """Shape of the kept mode block of a spectral weight: ``(n_modes[0], n_modes[1] // 2 + 1)``."""
        return self.n_modes[0], self.n_modes[1] // 2 + 1

    def fno_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``neuralop.models.FNO`` for this expert."""
        return dataclasses.asdict(self)

    def build(self) -> nn.Module:
        """A freshly initialised ``neuralop.models.FNO``."""
        from neuralop.models import FNO

        return FNO(**self.fno_kwargs())

    @classmethod
    def from_module(cls, module: nn.Module) -> ExpertConfig:
        """The config of a neuraloperator ``FNO``; raises ``ValueError`` for options BatchedFNO lacks."""
        from neuralop.models import FNO

        if not isinstance(module, FNO):
            raise TypeError(f"module: expected a neuralop.models.FNO, got {type(module).__name__}")
        kwargs = dict(module._init_kwargs)
        for key, default in _FIXED_FNO_KWARGS.items():
            value = kwargs.get(key, default)
            if value != default and not (value is None and default is None):
                raise ValueError(
                    f"FNO option {key}={value!r} is not supported by BatchedFNO (supported: {key}={default!r})"
                )
        if kwargs.get("conv_module") is not None and kwargs["conv_module"].__name__ != "SpectralConv":
            raise ValueError(f"FNO option conv_module={kwargs['conv_module']!r} is not supported (SpectralConv only)")
        if not isinstance(kwargs.get("positional_embedding"), (str, type(None))):
            raise ValueError("FNO option positional_embedding: only 'grid' or None are supported, got a module")
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in kwargs.items() if k in fields})


@dataclass(frozen=True)
class MLPExpertConfig(_StoredConfig):
    """Lotka–Volterra expert (App. H.6): ``n_layers`` Linear layers with tanh between them, the vector
    field ``f: R^state_dim -> R^state_dim`` of a neural ODE; one expert step (one frame) is one RK4 step of
    size ``dt`` (the dataset's ``dt_frame``; App. H.6: 0.1), so like the FNO experts it maps x_t -> x_{t+1}."""

    state_dim: int = 2
    hidden: int = 128
    n_layers: int = 2
    dt: float = 0.1

    def __post_init__(self) -> None:
        for name in ("state_dim", "hidden", "n_layers"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"MLPExpertConfig.{name}: expected an integer >= 1, got {value!r}")
        if isinstance(self.dt, bool) or not isinstance(self.dt, (int, float)) or not 0 < self.dt < math.inf:
            raise ValueError(f"MLPExpertConfig.dt: expected a finite number > 0, got {self.dt!r}")
        object.__setattr__(self, "dt", float(self.dt))

    def build(self) -> MLPExpert:
        widths = [self.state_dim] + [self.hidden] * (self.n_layers - 1) + [self.state_dim]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
            layers.append(nn.Linear(a, b))
            if i < self.n_layers - 1:
                layers.append(nn.Tanh())
        return MLPExpert(*layers, dt=self.dt)


class MLPExpert(nn.Sequential):
    """The Lotka–Volterra expert as a one-step map: its layers are the vector field ``f`` (``field``), and
    ``forward(x) = rk4_step(f, x, dt)``. A plain ``nn.Sequential`` of Linear/Tanh layers underneath, so its
    state-dict keys (``0.weight``, ``0.bias``, ``2.weight``, ...) and its weight graph are those of the MLP."""

    def __init__(self, *layers: nn.Module, dt: float) -> None:
        super().__init__(*layers)
        self.dt = float(dt)

    def field(self, x: torch.Tensor) -> torch.Tensor:
        """The vector field f(x): x [..., state_dim] -> [..., state_dim]."""
        for layer in self:
            x = layer(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rk4_step(self.field, x, self.dt)

    def extra_repr(self) -> str:
        return f"dt={self.dt}"


def rk4_step(f: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, dt: float) -> torch.Tensor:
    """One classical RK4 step of ``dx/dt = f(x)``; x ``[..., state_dim]``."""
    k1 = f(x)
    k2 = f(x + 0.5 * dt * k1)
    k3 = f(x + 0.5 * dt * k2)
    k4 = f(x + dt * k3)
    return x + dt / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4)


# Table 3 (paper): channels, n_modes, n_layers per system; hidden 64 everywhere.
_PAPER = {
    "cylinder_flow": dict(channels=2, n_modes=(12, 6), n_layers=4),
    "lambda_omega": dict(channels=2, n_modes=(8, 8), n_layers=4),
    "kolmogorov": dict(channels=3, n_modes=(8, 8), n_layers=8),
    "navier_stokes": dict(channels=3, n_modes=(8, 8), n_layers=8),
    # imported gridded data (data/gridded.py: `dynadiff import`): Table 3's ERA5 column; the zoo takes the
    # channel count from the dataset
    "gridded": dict(channels=2, n_modes=(8, 8), n_layers=4),
}
# Width per preset; tiny also caps depth at 4 and modes at 8 (32x32 grids, one CPU core).
_HIDDEN = {"tiny": 16, "bench": 16, "small": 32, "paper": 64}
_LV_HIDDEN = {"tiny": 32, "bench": 32, "small": 64, "paper": 128}


def expert_config(system_name: str, preset: str = "paper", **overrides: Any) -> ExpertConfig | MLPExpertConfig:
    """The expert config of ``system_name`` at ``preset``; ``overrides`` replace fields (e.g. the
    dataset's channel count: ``in_channels=C, out_channels=C``).

    tiny and bench: hidden 16, 4 layers, modes (8, 8) ((8, 4) for cylinder_flow); small: hidden 32, 4 layers,
    Table 3 modes; paper: Table 3. lotka_volterra returns an ``MLPExpertConfig`` (hidden 32/64/128).
    """
    if preset not in PRESETS:
        raise ValueError(f"preset: unknown {preset!r} (valid: {', '.join(PRESETS)})")
    if system_name == "lotka_volterra":
        return replace_checked(MLPExpertConfig(hidden=_LV_HIDDEN[preset]), overrides, "expert")
    if system_name not in _PAPER:
        valid = ", ".join([*_PAPER, "lotka_volterra"])
        raise ValueError(f"system_name: unknown {system_name!r} (valid: {valid})")
    spec = _PAPER[system_name]
    n_modes, n_layers = spec["n_modes"], spec["n_layers"]
    if preset != "paper":
        n_layers = 4
    if preset in ("tiny", "bench"):
        n_modes = (8, 4) if system_name == "cylinder_flow" else (8, 8)
    cfg = ExpertConfig(
        in_channels=spec["channels"],
        out_channels=spec["channels"],
        hidden_channels=_HIDDEN[preset],
        n_modes=n_modes,
        n_layers=n_layers,
    )
    return replace_checked(cfg, overrides, "expert")


def make_expert(system_name: str, preset: str = "paper", **overrides: Any) -> nn.Module:
    """A freshly initialised expert: ``neuralop.models.FNO`` (PDE systems) or ``nn.Sequential`` (LV)."""
    return expert_config(system_name, preset, **overrides).build()
