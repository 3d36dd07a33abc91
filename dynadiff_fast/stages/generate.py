"""``dynadiff generate``: one expert (FNO; MLP for ODE systems) for an environment of a dataset file, from its first observed frames.

    dynadiff generate --run RUN --obs FILE.h5:ENV --frames 10 --out expert.safetensors [--n-samples 8]

Reads ``frames`` frames of one *test* trajectory of environment ``ENV`` (default the first test trajectory,
from frame ``start``), standardises them with the run's statistics, generates ``n_samples`` candidates and keeps
the best by the prefix score on those frames (``select="prefix"``). Writes

    expert.safetensors   the expert's neuraloperator state dict; metadata "fno_kwargs" (JSON) and provenance
    expert.json          {"fno_kwargs": {...}, "system_name", "run", "obs", "frames", "prefix_score_mse", ...}

``prefix_score_mse`` is null with one observed frame (no frame pair to score). A non-finite score with more
frames means non-finite generated weights: an error, and nothing is written.

Load it without this package::

    from neuralop.models import FNO; from safetensors.torch import load_file; import json
    cfg = json.load(open("expert.json"))["fno_kwargs"]
    model = FNO(**cfg); model.load_state_dict(load_file("expert.safetensors"))

A Lotka–Volterra run writes its MLP expert instead: ``"mlp_expert_config"`` in place of ``"fno_kwargs"``, loaded
by ``MLPExpertConfig(**cfg).build().load_state_dict(load_file("expert.safetensors"))`` (one RK4 step per call).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from dynadiff_fast import io
from dynadiff_fast._backend import resolve_device
from dynadiff_fast.generative.dynadiff import N_SAMPLES
from dynadiff_fast.stages.common import Command
from dynadiff_fast.state_dict import module_tensors

log = logging.getLogger("dynadiff.generate")


@dataclass(frozen=True)
class GenerateConfig:
    run: str = field(default="", metadata={"help": "trained run (`dynadiff train dit` / `train all` output)"})
    obs: str = field(default="", metadata={"help": "observations: FILE.h5:ENV_INDEX"})
    frames: int = field(default=10, metadata={"help": "observed frames L"})
    traj: int | None = field(default=None, metadata={"help": "trajectory index (default: the first test one)"})
    start: int = field(default=0, metadata={"help": "first observed frame"})
    out: str = field(default="", metadata={"help": "output .safetensors (a .json beside it)"})
    n_samples: int = field(default=N_SAMPLES, metadata={"help": "candidates K (best kept by the prefix score)"})
    select: str = field(default="prefix", metadata={"help": "prefix (keep the best) | none (write candidate 0)"})
    steps: int = field(default=50, metadata={"help": "sampler steps"})
    method: str = field(default="ddim", metadata={"help": "sampler: ddim | ddpm"})
    guidance: tuple[float, ...] | None = field(
        default=None, metadata={"help": "classifier-free guidance scale(s), e.g. 1,2,4 (default: the run's)"}
    )
    seed: int = field(default=0, metadata={"help": "sampling seed"})
    prompt_mode: str = field(default="real", metadata={"help": "real | shuffled | zero (controls)"})
    device: str = field(default="cpu", metadata={"help": "cpu | cuda"})


def parse_obs(spec: str) -> tuple[Path, int]:
    """``"FILE.h5:ENV"`` -> (path, env)."""
    path, sep, env = spec.rpartition(":")
    if not sep or not path or not env.strip().lstrip("-").isdigit():
        raise ValueError(f"obs: expected FILE.h5:ENV_INDEX (e.g. data.h5:7), got {spec!r}")
    return Path(path), int(env)


def read_observations(dd, spec: str, frames: int, traj: int | None = None, start: int = 0) -> torch.Tensor:
    """``frames`` raw frames of ``FILE.h5:ENV`` standardised with the run's statistics -> ``[L, *frame]``."""
    from dynadiff_fast.data import EnvDataset

    path, env = parse_obs(spec)
    if not isinstance(frames, int) or frames < 1:
        raise ValueError(f"frames: expected an int >= 1, got {frames!r}")
    with EnvDataset.open(path) as ds:
        if ds.system_name != dd.system_name:
            raise ValueError(f"obs: {path} holds {ds.system_name} data; the run {dd.manifest['system_name']!r} "
                             f"generates {dd.system_name} experts")  # fmt: skip
        if tuple(ds.frame_shape) != dd.frame_shape:
            raise ValueError(f"obs: {path} has frames {tuple(ds.frame_shape)}, the run expects {dd.frame_shape}")
        if not 0 <= env < ds.n_env:
            raise ValueError(f"obs: environment {env} out of range [0, {ds.n_env}) in {path}")
        traj = ds.n_train_traj if traj is None else traj
        if not 0 <= traj < ds.n_traj:
            raise ValueError(f"traj: {traj} out of range [0, {ds.n_traj}) in {path}")
        if start < 0 or start + frames > ds.n_frames:
            raise ValueError(f"frames: start {start} + {frames} frames exceeds the {ds.n_frames} frames of {path}")
        raw = ds.load(env, traj, slice(start, start + frames), normalized=False)[0, 0]
    return dd.standardize(raw)


def write_expert(out: str | Path, experts, index: int, extra: dict) -> Path:
    """Expert ``index`` of a BatchedFNO (BatchedMLP) -> ``out`` (safetensors state dict) + ``out.json`` (the
    architecture: ``fno_kwargs`` of ``neuralop.models.FNO``, or ``mlp_expert_config`` of ``MLPExpertConfig``;
    + extra)."""
    from dynadiff_fast.experts.configs import ExpertConfig

    out = Path(out)
    if out.suffix != ".safetensors":
        raise ValueError(f"out: expected a path ending in .safetensors, got {str(out)!r}")
    module = experts.select(index).to_modules()[0]
    state = module_tensors(module)
    if isinstance(experts.config, ExpertConfig):
        arch, fmt = ("fno_kwargs", experts.config.fno_kwargs()), "neuraloperator-fno-state-dict"
    else:
        arch, fmt = ("mlp_expert_config", dataclasses.asdict(experts.config)), "dynadiff-mlp-expert-state-dict"
    doc = {arch[0]: arch[1], **extra}
    meta = {arch[0]: json.dumps(arch[1]), "format": fmt}
    doc["sha256"] = io.save_safetensors(out, state, metadata=meta)
    io.write_json(out.with_suffix(".json"), doc)
    return out


def generate_expert(cfg: GenerateConfig) -> Path:
    from dynadiff_fast.generative.dynadiff import DynaDiff

    for name in ("run", "obs", "out"):
        if not getattr(cfg, name):
            raise ValueError(f"{name}: required (pass --{name})")
    dd = DynaDiff.load(cfg.run, device=resolve_device(cfg.device))
    obs = read_observations(dd, cfg.obs, cfg.frames, cfg.traj, cfg.start)
    t0 = time.perf_counter()
    experts, scores = dd.generate(obs, n_samples=cfg.n_samples, select=cfg.select, steps=cfg.steps,
                                  guidance=cfg.guidance, seed=cfg.seed, prompt_mode=cfg.prompt_mode,
                                  method=cfg.method)  # fmt: skip
    seconds = time.perf_counter() - t0
    score = prefix_score(scores, cfg.frames)  # finite: DynaDiff.generate refuses non-finite weights and scores
    extra = {"system_name": dd.system_name, "run": str(Path(cfg.run).resolve()), "obs": cfg.obs,
             "frames": cfg.frames, "traj": cfg.traj, "start": cfg.start, "n_samples": cfg.n_samples,
             "steps": cfg.steps, "seed": cfg.seed, "prompt_mode": cfg.prompt_mode,
             "prefix_score_mse": score, "seconds": seconds}  # fmt: skip
    out = write_expert(cfg.out, experts, 0, extra)
    log.info("generate: wrote %s (prefix score on the observed frames %s, %.2f s)", out, score, seconds)
    return out


def prefix_score(scores: torch.Tensor, frames: int) -> float | None:
    """The kept expert's prefix score for ``expert.json``; None with one frame, where DynaDiff scores NaN (no frame
    pair to score) and strict JSON has no NaN."""
    return float(scores[0]) if frames >= 2 else None


def _run(cfg: GenerateConfig) -> int:
    generate_expert(cfg)
    return 0


COMMAND = Command(config=GenerateConfig, run=_run)
