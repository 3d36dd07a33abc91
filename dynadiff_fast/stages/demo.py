"""``dynadiff demo``: the whole pipeline on one system, end to end, in one run folder.

    dynadiff demo                                   # lambda_omega, bench preset, CPU: ~25 core-minutes
    dynadiff demo --system lotka_volterra           # tiny preset (the systems without a bench preset)
    dynadiff demo --system navier_stokes --preset small --device cuda

Stages (``stages.runner``; a re-run reuses every finished stage, ``--force "[zoo]"`` redoes one):

    simulate   the dataset                          OUT/data.h5                 (``dynadiff simulate``)
    zoo        base FNO + expert zoo                OUT/zoo/                    (``dynadiff zoo build``)
    vae        weight VAE                           OUT/dynadiff/vae/           (``dynadiff train vae``)
    dit        latent DiT + prompter                OUT/dynadiff/dit/           (``dynadiff train dit``)
    generate   one expert per unseen environment    OUT/generated/env_*.safetensors (``dynadiff generate``)
    evaluate   DynaDiff vs every baseline           OUT/eval/{results.json, report.md, figures/}

OUT defaults to ``runs/demo/<system>_<preset>``. Stage wall-clocks go to ``OUT/stages.json``; the results
table is printed at the end. Every stage keeps its own resolved config beside its output.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path

from dynadiff_fast import config as config_mod
from dynadiff_fast import io
from dynadiff_fast.config import PRESETS
from dynadiff_fast.generative.dynadiff import N_SAMPLES
from dynadiff_fast.stages.common import Command
from dynadiff_fast.stages.runner import Stage, run_stages

log = logging.getLogger("dynadiff.demo")
STAGES = ("simulate", "zoo", "vae", "dit", "generate", "evaluate")
# Every method but prefix fine-tuning, whose 1000-step run alone takes a third of an evaluation (336 s of
# 1012 s on Lambda-Omega), and its seed ensemble (K times its 100-step run); --methods null adds both back.
DEFAULT_METHODS = (
    "dynadiff", "one_per_env", "base", "nn_prefix", "soup", "ccm", "param_conditioned", "context_adapt", "ensembles",
)  # fmt: skip


@dataclass(frozen=True)
class DemoConfig:
    system: str = field(default="lambda_omega", metadata={"help": "system to run the pipeline on"})
    preset: str | None = field(
        default=None,
        metadata={"help": "bench (informative, CPU) | tiny (tests) | small | paper (default: bench where the system "
                  "has one, else tiny)"},
    )  # fmt: skip
    out: str | None = field(default=None, metadata={"help": "run folder (default runs/demo/SYSTEM_PRESET)"})
    seed: int = field(default=0, metadata={"help": "seed of every stage"})
    split_seed: int | None = field(default=0, metadata={"help": "seed of the seen/unseen split (None: seed)"})
    device: str | None = field(default=None, metadata={"help": "cpu | cuda (default: cuda when available)"})
    experts_per_env: int | None = field(default=None, metadata={"help": "zoo experts per seen env (default: preset)"})
    n_samples: int = field(default=N_SAMPLES, metadata={"help": "DynaDiff candidates K per environment"})
    obs_len: int = field(default=10, metadata={"help": "observed frames L"})
    prompt_len: int = field(default=20, metadata={"help": "longest observation the prompter is trained on"})
    methods: tuple[str, ...] | None = field(
        default=DEFAULT_METHODS, metadata={"help": "evaluated methods (None: all, prefix fine-tuning too)"}
    )
    force: tuple[str, ...] = field(default=(), metadata={"help": f"stages to redo ({', '.join(STAGES)}, all)"})
    progress: bool = field(
        default=True, metadata={"help": "progress: a tqdm bar on a terminal, else a log line every 30 s (rank 0)"}
    )


def resolve(cfg: DemoConfig) -> DemoConfig:
    """``cfg`` with its preset chosen: the informative ``bench`` where the system has one, else ``tiny``."""
    from dynadiff_fast.data.presets import available

    if cfg.preset is None:
        return replace(cfg, preset="bench" if (cfg.system, "bench") in available() else "tiny")
    if cfg.preset not in PRESETS:
        raise ValueError(f"preset: unknown {cfg.preset!r} (valid: {', '.join(PRESETS)})")
    return cfg


def run_dir(cfg: DemoConfig) -> Path:
    cfg = resolve(cfg)
    return Path(cfg.out) if cfg.out else Path("runs/demo") / f"{cfg.system}_{cfg.preset}"


def _readable(fn) -> bool:
    try:
        fn()
    except (FileNotFoundError, ValueError, KeyError, OSError):
        return False
    return True


def build_stages(cfg: DemoConfig) -> list[Stage]:
    from dynadiff_fast.eval.protocol import ProtocolConfig
    from dynadiff_fast.stages.evaluate import EvaluateConfig
    from dynadiff_fast.stages.simulate import SimulateConfig
    from dynadiff_fast.stages.train_dit import TrainDiTConfig
    from dynadiff_fast.stages.train_vae import TrainVAEConfig
    from dynadiff_fast.stages.zoo import ZooBuildConfig

    cfg = resolve(cfg)
    root = run_dir(cfg)
    data, zoo, dd = root / "data.h5", root / "zoo", root / "dynadiff"
    common = {"preset": cfg.preset, "seed": cfg.seed, "device": cfg.device}
    sim = SimulateConfig(
        system=cfg.system, out=str(data), preset=cfg.preset, seed=cfg.seed, split_seed=cfg.split_seed, device=cfg.device
    )
    zoo_cfg = ZooBuildConfig(
        data=str(data),
        out=str(zoo),
        experts_per_env=cfg.experts_per_env,
        progress=cfg.progress,
        **common,
    )
    vae = TrainVAEConfig(zoo=str(zoo), data=str(data), out=str(dd / "vae"), progress=cfg.progress, **common)
    dit = TrainDiTConfig(
        zoo=str(zoo),
        vae=str(dd / "vae"),
        data=str(data),
        out=str(dd / "dit"),
        obs_len=cfg.prompt_len,
        progress=cfg.progress,
        **common,
    )
    ev = EvaluateConfig(
        run=str(dd),
        data=str(data),
        zoo=str(zoo),
        out=str(root / "eval"),
        methods=cfg.methods,
        preset=cfg.preset,
        n_samples=cfg.n_samples,
        seed=cfg.seed,
        device=cfg.device or "auto",
        protocol=ProtocolConfig(obs_len=cfg.obs_len),
    )
    return [
        Stage(
            "simulate",
            config_mod.to_dict(sim),
            lambda: _simulate(sim, cfg.progress),
            lambda: _readable(lambda: _open_data(data)),
        ),
        Stage(
            "zoo", config_mod.to_dict(zoo_cfg), lambda: _build_zoo(zoo_cfg), lambda: _readable(lambda: _open_zoo(zoo))
        ),
        Stage("vae", config_mod.to_dict(vae), lambda: _train_vae(vae), lambda: _readable(lambda: _load_vae(vae.out))),
        Stage("dit", config_mod.to_dict(dit), lambda: _train_dit(dit), lambda: _readable(lambda: _load_dd(dd))),
        Stage(
            "generate",
            {"run": str(dd), "data": str(data), "obs_len": cfg.obs_len, "n_samples": cfg.n_samples, "seed": cfg.seed},
            lambda: generate_unseen(dd, data, root / "generated", cfg),
            lambda: (root / "generated" / "index.json").exists(),
        ),
        Stage(
            "evaluate",
            config_mod.to_dict(ev),
            lambda: _evaluate(ev),
            lambda: (root / "eval" / "results.json").exists() and (root / "eval" / "report.md").exists(),
        ),
    ]


# ---- stage bodies (each delegates to the command that owns the work) ------------------------------------------
def _simulate(cfg, progress: bool) -> None:
    from dynadiff_fast.stages.simulate import simulate_dataset

    simulate_dataset(cfg, progress=progress)


def _open_data(path: Path) -> None:
    from dynadiff_fast.data import EnvDataset

    EnvDataset.open(path).close()


def _build_zoo(cfg) -> None:
    from dynadiff_fast.stages.zoo import build_zoo

    build_zoo(cfg)


def _open_zoo(path: Path) -> None:
    from dynadiff_fast.experts.zoo import Zoo

    Zoo.open(path)


def _train_vae(cfg) -> None:
    from dynadiff_fast.stages.train_vae import train_vae

    train_vae(cfg)


def _load_vae(path: str) -> None:
    from dynadiff_fast.generative.vae import load_vae

    load_vae(path)


def _train_dit(cfg) -> None:
    from dynadiff_fast.stages.train_dit import train_dit

    train_dit(cfg)


def _load_dd(path: Path) -> None:
    from dynadiff_fast.generative.dynadiff import DynaDiff

    DynaDiff.load(path)


def generate_unseen(run: Path, data: Path, out: Path, cfg: DemoConfig) -> None:
    """One generated expert per unseen environment (``dynadiff generate``, observing the first ``obs_len``
    frames of training trajectory 0, as the evaluation does), and ``out/index.json`` listing them."""
    from dynadiff_fast.data import EnvDataset
    from dynadiff_fast.stages.generate import GenerateConfig, generate_expert

    with EnvDataset.open(data) as ds:
        envs = [int(e) for k in ("unseen_in", "unseen_out") for e in ds.split[k].tolist()]
    files = {}
    for env in envs:
        g = GenerateConfig(
            run=str(run),
            obs=f"{data}:{env}",
            frames=cfg.obs_len,
            traj=0,
            out=str(out / f"env_{env:04d}.safetensors"),
            n_samples=cfg.n_samples,
            seed=cfg.seed,
            device=cfg.device or "cpu",
        )
        files[env] = str(generate_expert(g))
    io.write_json(out / "index.json", {"run": str(run), "data": str(data), "experts": files})


def _evaluate(cfg) -> None:
    from dynadiff_fast.stages.evaluate import run_evaluation

    run_evaluation(cfg)


def run_demo(cfg: DemoConfig) -> list[dict]:
    """Run (or finish) every stage; returns the per-stage records and writes ``OUT/stages.json``."""
    cfg = resolve(cfg)
    root = run_dir(cfg)
    root.mkdir(parents=True, exist_ok=True)
    config_mod.save_resolved(cfg, root / "config.yaml", seed=cfg.seed)
    records = run_stages(root, build_stages(cfg), tuple(cfg.force))
    io.write_json(root / "stages.json", records)
    return records


def _run(cfg: DemoConfig) -> int:
    from dynadiff_fast.stages import report

    records = run_demo(cfg)
    root = run_dir(cfg)
    print("\nstage      seconds  reused")
    for r in records:
        print(f"{r['stage']:<10} {r['seconds']:7.1f}  {'yes' if r['reused'] else 'no'}")
    print(f"total      {sum(r['seconds'] for r in records):7.1f}\n")
    doc = report.load(root / "eval" / "results.json")
    print(report.table(doc))
    print(f"\neverything is under {root}/ (report: {root / 'eval' / 'report.md'})")
    return 0


COMMAND = Command(config=DemoConfig, run=_run)
