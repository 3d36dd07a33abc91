"""``dynadiff simulate``: simulate every environment of a preset into one HDF5 dataset, resumably.

Environments are simulated in fixed batches (``envs_per_call`` environments x all their trajectories in
one batched solver call). Batch ``b`` is seeded with ``SeedSequence([seed, b])``, so a resumed run
produces exactly the file an uninterrupted one would.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dynadiff_fast import config as config_mod
from dynadiff_fast import io
from dynadiff_fast import progress as progress_mod
from dynadiff_fast._backend import resolve_device
from dynadiff_fast.data import dataset as ds_mod
from dynadiff_fast.data.environments import environment_grid, split_environments
from dynadiff_fast.data.presets import get_preset
from dynadiff_fast.profiling import nvtx_range
from dynadiff_fast.stages.common import Command, print_dataset

log = logging.getLogger("dynadiff.simulate")


@dataclass(frozen=True)
class SimulateConfig:
    system: str = field(default="kolmogorov", metadata={"help": "system name (dynadiff_fast.list_systems())"})
    preset: str = field(default="tiny", metadata={"help": "tiny | bench | small | paper"})
    out: str | None = field(default=None, metadata={"help": "output .h5 (default runs/data/SYSTEM_PRESET.h5)"})
    seed: int = field(default=0, metadata={"help": "seed for the split and the initial conditions"})
    split_seed: int | None = field(
        default=None, metadata={"help": "seed of the seen/unseen split alone (default: seed)"}
    )
    device: str | None = field(default=None, metadata={"help": "cpu | cuda (default: cuda when available)"})
    backend: str = field(default="auto", metadata={"help": "solver kernel backend"})
    envs_per_call: int = field(default=4, metadata={"help": "environments per batched solver call"})
    n_frames: int | None = field(default=None, metadata={"help": "override the preset's frame count"})
    n_train_traj: int | None = field(default=None, metadata={"help": "override training trajectories per env"})
    n_test_traj: int | None = field(default=None, metadata={"help": "override test trajectories per env"})
    n_seen: int | None = field(default=None, metadata={"help": "override the number of seen environments"})
    solver: dict[str, Any] = field(default_factory=dict, metadata={"help": "solver setting overrides"})

    def __post_init__(self) -> None:
        check(self)

    def output_path(self) -> Path:
        return Path(self.out) if self.out else Path("runs/data") / f"{self.system}_{self.preset}.h5"


def check(cfg: SimulateConfig) -> None:
    """Refuse, when the config is built (so the CLI says it in one line before any work), settings that give an
    unusable dataset: the statistics and the zoo need training trajectories (without them the statistics are
    NaN), validation and evaluation need test trajectories, a trajectory needs a frame after the initial one.
    The seen-environment count is checked with the split (``split_environments``), also before any work."""
    if not isinstance(cfg.envs_per_call, int) or cfg.envs_per_call < 1:
        raise ValueError(f"envs_per_call: expected an integer >= 1, got {cfg.envs_per_call!r}")
    preset = get_preset(cfg.system, cfg.preset, **_preset_overrides(cfg))
    for name in ("n_train_traj", "n_test_traj", "n_frames"):
        value = getattr(preset, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name}: expected an integer >= 1, got {value!r}")


def _batch_seed(seed: int, batch: int) -> int:
    return int(np.random.SeedSequence([seed, batch]).generate_state(1)[0])


def _preset_overrides(cfg: SimulateConfig) -> dict[str, Any]:
    names = ("n_frames", "n_train_traj", "n_test_traj", "n_seen")
    return {k: getattr(cfg, k) for k in names if getattr(cfg, k) is not None}


def make_dataset(
    system: str = "kolmogorov", preset: str = "tiny", out: str | None = None, progress: bool = True, **overrides
) -> Path:
    """Simulate (or resume, or reuse) a dataset; ``overrides`` are ``SimulateConfig`` fields."""
    return simulate_dataset(SimulateConfig(system=system, preset=preset, out=out, **overrides), progress)


def simulate_dataset(cfg: SimulateConfig, progress: bool = True) -> Path:
    """Simulate (or resume, or reuse) the dataset described by ``cfg``; returns the final file path."""
    from dynadiff_fast.systems import get_system

    preset = get_preset(cfg.system, cfg.preset, **_preset_overrides(cfg))
    system = get_system(cfg.system, **{**preset.system, **cfg.solver})
    out = cfg.output_path()
    resolved = config_mod.to_dict(cfg)
    if ds_mod.reuse_finished(out, resolved):
        log.info("%s is complete; nothing to do", out)
        return out

    with io.output_lock(out, "dynadiff simulate"):
        params = environment_grid(preset.env_grid)
        system.validate_params(params)  # fail before any work on unstable parameters
        split_seed = cfg.seed if cfg.split_seed is None else cfg.split_seed
        split = split_environments(params, preset.n_seen, preset.out_fraction, split_seed)
        n_traj = preset.n_train_traj + preset.n_test_traj
        partial = out.with_name(out.name + ".partial")
        frame_shape = (len(system.channel_names), *system.grid) if system.grid else (len(system.channel_names),)

        done = ds_mod.resume_state(partial, resolved, "env_done", params.shape[0], "environments")
        if done is None:
            out.parent.mkdir(parents=True, exist_ok=True)
            ds_mod.create_partial(
                partial,
                system=system,
                params=params,
                split=split,
                n_traj=n_traj,
                n_train_traj=preset.n_train_traj,
                n_frames=preset.n_frames,
                frame_shape=frame_shape,
                seed=cfg.seed,
                config=resolved,
                versions=config_mod.versions(),
            )
            done = np.zeros(params.shape[0], dtype=bool)
        device = resolve_device(cfg.device).type
        batches = [
            list(range(i, min(i + cfg.envs_per_call, params.shape[0])))
            for i in range(0, params.shape[0], cfg.envs_per_call)
        ]
        bar = progress_mod.bar(params.shape[0], int(done.sum()), f"simulate {cfg.system}", "env", enabled=progress)
        t0 = time.perf_counter()
        for b, envs in enumerate(batches):
            if done[envs].all():
                continue
            rows = params[envs].repeat_interleave(n_traj, dim=0)
            with nvtx_range("sim/dataset_batch"):
                traj = system.simulate(
                    rows, n_frames=preset.n_frames, seed=_batch_seed(cfg.seed, b), backend=cfg.backend, device=device
                )
            traj = traj.reshape(len(envs), n_traj, *traj.shape[1:])
            ds_mod.write_environments(partial, envs, traj)
            bar.update(len(envs))
        bar.close()
        ds_mod.finalize(partial, out)
        config_mod.save_resolved(
            cfg, out.with_suffix(".config.yaml"), seed=cfg.seed, seconds=round(time.perf_counter() - t0, 2)
        )
        log.info("wrote %s in %.1f s", out, time.perf_counter() - t0)
        return out


COMMAND = Command(config=SimulateConfig, run=lambda cfg: print_dataset(simulate_dataset(cfg)))
