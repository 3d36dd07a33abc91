"""Dataset presets: which environments, how many trajectories and frames, and the solver settings.

``paper`` follows the DynaDiff paper (App. B, Table 2; seen:total counts of Table 1; App. H.6 for
Lotka–Volterra). ``small`` and ``tiny`` scale the grids, counts and lengths down for a GPU workstation and
for one CPU core (minutes). Environment grids are tensor products of ``linspace(lo, hi, count)`` per
parameter.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dynadiff_fast.config import preset_of, replace_checked


@dataclass(frozen=True)
class DatasetPreset:
    """What ``dynadiff simulate`` produces for one system.

    Attributes:
        env_grid: per parameter (lo, hi, count), in ``System.param_names`` order.
        n_seen: environments used for training (zoo, VAE, DiT); the rest are unseen.
        out_fraction: an environment whose parameter lies within this fraction of its range from either end
            (in any parameter) is a candidate for ``unseen_out`` (outside the seen range); seen environments
            are drawn from the others, and the inner unseen ones form ``unseen_in``.
        n_train_traj / n_test_traj: trajectories per environment (training ones come first).
        n_frames: saved frames after the initial one (the file holds n_frames + 1).
        system: solver-setting overrides passed to ``get_system``.
    """

    env_grid: tuple[tuple[float, float, int], ...]
    n_seen: int
    n_train_traj: int
    n_test_traj: int
    n_frames: int
    out_fraction: float = 0.1
    system: dict[str, Any] = field(default_factory=dict)


_PAPER: dict[str, DatasetPreset] = {
    "navier_stokes": DatasetPreset(((0.1, 0.3, 11), (0.0, 1.0, 11)), 24, 100, 20, 2000),
    "kolmogorov": DatasetPreset(((50.0, 250.0, 51),), 12, 100, 20, 200),
    "lambda_omega": DatasetPreset(((1.0, 1.5, 51),), 12, 100, 20, 1000),
    "cylinder_flow": DatasetPreset(((200.0, 500.0, 31), (10.0, 25.0, 16)), 96, 100, 20, 225),
    "lotka_volterra": DatasetPreset(((0.5, 1.0, 11), (0.5, 1.0, 11)), 24, 100, 20, 100),
}
# NS: T = 50 at dt 0.025 -> 2000 frames in the paper.

_SMALL: dict[str, DatasetPreset] = {
    "navier_stokes": DatasetPreset(((0.1, 0.3, 11), (0.0, 1.0, 11)), 24, 32, 8, 100, system={"resolution": 64}),
    "kolmogorov": DatasetPreset(((50.0, 250.0, 51),), 12, 32, 8, 100, system={"resolution": 64}),
    "lambda_omega": DatasetPreset(((1.0, 1.5, 51),), 12, 32, 8, 100, system={"resolution": 64}),
    "cylinder_flow": DatasetPreset(((200.0, 500.0, 16), (10.0, 25.0, 8)), 32, 16, 4, 100),
    "lotka_volterra": DatasetPreset(((0.5, 1.0, 11), (0.5, 1.0, 11)), 24, 32, 8, 100),
}

_TINY: dict[str, DatasetPreset] = {
    "navier_stokes": DatasetPreset(((0.1, 0.3, 5), (0.0, 1.0, 5)), 6, 8, 4, 20, system={"resolution": 32}),
    "kolmogorov": DatasetPreset(((50.0, 250.0, 11),), 5, 8, 4, 20, system={"resolution": 32}),
    "lambda_omega": DatasetPreset(((1.0, 1.5, 11),), 5, 8, 4, 20, system={"resolution": 32}),
    # refine=1: a 128x64 lattice (the saved grid) instead of 3x finer; stable over the whole Re x r grid.
    "cylinder_flow": DatasetPreset(((200.0, 500.0, 5), (10.0, 25.0, 4)), 4, 3, 2, 20, system={"refine": 1}),
    "lotka_volterra": DatasetPreset(((0.5, 1.0, 5), (0.5, 1.0, 5)), 8, 16, 4, 50),
}

# bench: the informative CPU-scale benchmark (``dynadiff benchmark``). The tiny presets' horizon is too short
# for the parameter to matter (Lambda-Omega: 20 frames of 0.04 = 0.8 time units, over which beta = 1.0 and 1.5
# drift apart by 0.4 rad), so bench observes longer: 40 frames of 0.2 (8 time units, ~4 rad between the ends
# of the beta range). Measured (``dynadiff benchmark``, 3 seeds, 40-step rollouts): pooled base / One-per-Env
# RMSE 0.422 / 0.170 = 2.5x in-domain, 0.548 / 0.177 = 3.1x out-domain; one seed of the benchmark about 3,100 s
# wall with three seeds sharing the 2 cores (about 33 core-minutes, 2026-12-02).
# Navier-Stokes (A, s), the two-parameter bench: 20 frames of 0.1 (2 time units). Measured (one seed, 2026-12-01):
# base / One-per-Env 0.0648 / 0.0434 = 1.49x in-domain, 0.0902 / 0.0537 = 1.68x out-domain: below the 2x this
# preset is meant to reach. Tried 2026-12-02 (one seed each, base / One-per-Env in / out): dt_frame 0.2 x 20
# frames 1.44 / 1.56; 0.1 x 40 1.66 / 1.44; burn_in 1 (dt 0.2) 1.32 / 1.62; A in [0.05, 0.5] 1.32 / 1.89;
# A in [0.05, 0.2] 1.39 / 1.81 (dt 0.1), 1.39 / 1.75 (dt 0.2); zoo fine-tuning 40 epochs at lr 3e-3 1.55 / 1.80;
# 60 epochs 1.77 / 1.96 (zoo 356 s, evaluate 383 s); 100 epochs 1.93 / 2.06 (the bench zoo preset since,
# ``stages.zoo._BENCH_FINETUNE``). The laminar low-A environments reach 2-4x, the unsteady A >= 0.2 ones
# stay at 1-1.5x and dominate the mean RMSE; in-domain is still just under 2x.
_BENCH: dict[str, DatasetPreset] = {
    "navier_stokes": DatasetPreset(
        ((0.1, 0.3, 5), (0.0, 1.0, 5)), 7, 6, 3, 20, system={"resolution": 32, "dt_frame": 0.1}
    ),
    "lambda_omega": DatasetPreset(
        ((1.0, 1.5, 13),), 6, 6, 3, 40, out_fraction=0.15, system={"resolution": 32, "dt_frame": 0.2}
    ),
}

DATASET_PRESETS: dict[str, dict[str, DatasetPreset]] = {
    "tiny": _TINY,
    "bench": _BENCH,
    "small": _SMALL,
    "paper": _PAPER,
}


def available() -> list[tuple[str, str]]:
    """Every (system, preset) pair that has a dataset preset (``bench`` covers the benchmarked systems only)."""
    return [(system, preset) for preset, table in DATASET_PRESETS.items() for system in table]


def get_preset(system: str, preset: str, **overrides: Any) -> DatasetPreset:
    """The dataset preset for ``system`` at scale ``preset``, with field overrides."""
    table = preset_of(DATASET_PRESETS, preset)
    if system not in table:
        if system in _TINY:
            raise ValueError(f"preset: {preset!r} has no {system} entry (systems with one: {', '.join(table)})")
        raise ValueError(f"system: unknown name {system!r} (valid: {', '.join(_TINY)})")
    return replace_checked(table[system], overrides)
