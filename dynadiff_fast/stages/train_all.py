"""``dynadiff train all``: the weight VAE, then the latent DiT + prompter, into one run folder.

    dynadiff train all --zoo ZOO --data FILE.h5 --out RUN [--preset tiny] [--set vae.KEY=V] [--set dit.KEY=V]

Layout: ``RUN/vae`` (``dynadiff train vae`` run), ``RUN/dit`` (``dynadiff train dit`` run whose manifest points
at ``../vae``), ``RUN/config.yaml``. ``DynaDiff.load(RUN)`` finds both. Each stage resumes on its own, so an
interrupted ``train all`` re-run finishes the VAE (or skips it when complete) and then the DiT.
``vae`` / ``dit`` hold overrides of the stages' own configs (``TrainVAEConfig`` / ``TrainDiTConfig`` fields);
zoo, data, preset, seed, device and progress are shared.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dynadiff_fast import config as config_mod
from dynadiff_fast.stages.common import Command


@dataclass(frozen=True)
class TrainAllConfig:
    zoo: str = field(default="", metadata={"help": "zoo folder (`dynadiff zoo build`)"})
    data: str = field(default="", metadata={"help": "dataset .h5 the zoo was built from"})
    out: str = field(default="", metadata={"help": "run folder (RUN/vae, RUN/dit)"})
    preset: str = field(default="tiny", metadata={"help": "tiny | bench | small | paper (both stages)"})
    seed: int = field(default=0, metadata={"help": "seed of both stages"})
    device: str | None = field(default=None, metadata={"help": "cpu | cuda (default: cuda when available)"})
    progress: bool = field(
        default=True, metadata={"help": "progress: a tqdm bar on a terminal, else a log line every 30 s (rank 0)"}
    )
    vae: dict[str, Any] = field(default_factory=dict, metadata={"help": "TrainVAEConfig overrides"})
    dit: dict[str, Any] = field(default_factory=dict, metadata={"help": "TrainDiTConfig overrides"})


def stage_config(cls: type, shared: dict[str, Any], overrides: dict[str, Any], where: str) -> Any:
    """``cls`` built from the shared values it has fields for, then the stage's own overrides."""
    names = {f.name for f in dataclasses.fields(cls)}
    values = {k: v for k, v in shared.items() if k in names}
    clash = sorted(set(overrides) & {"zoo", "data", "out", "vae"})
    if clash:
        raise ValueError(f"{where}: {clash} are set by `train all` itself; pass them at the top level")
    return config_mod.build(cls, {**values, **overrides}, where)


def train_all(cfg: TrainAllConfig) -> Path:
    """Train the VAE into ``out/vae`` and the DiT into ``out/dit``; returns ``out``."""
    from dynadiff_fast.stages.train_dit import TrainDiTConfig, train_dit
    from dynadiff_fast.stages.train_vae import TrainVAEConfig, train_vae

    for name in ("zoo", "data", "out"):
        if not getattr(cfg, name):
            raise ValueError(f"{name}: required (pass --{name})")
    out = Path(cfg.out)
    shared = {k: getattr(cfg, k) for k in ("zoo", "data", "preset", "seed", "device", "progress")}
    vae_cfg = stage_config(TrainVAEConfig, {**shared, "out": str(out / "vae")}, cfg.vae, "vae")
    dit_cfg = stage_config(TrainDiTConfig, {**shared, "out": str(out / "dit"), "vae": str(out / "vae")}, cfg.dit, "dit")
    out.mkdir(parents=True, exist_ok=True)
    config_mod.save_resolved(cfg, out / "config.yaml", seed=cfg.seed)
    train_vae(vae_cfg)
    train_dit(dit_cfg)
    return out


def _run(cfg: TrainAllConfig) -> int:
    train_all(cfg)
    return 0


COMMAND = Command(config=TrainAllConfig, run=_run)
