"""``dynadiff zoo build``: the domain-adaptive model zoo (paper Sec. 3.2, App. C Table 3).

    dynadiff zoo build --data runs/data/kolmogorov_tiny.h5 --out runs/zoo/kolmogorov_tiny --experts-per-env 4

Experts are FNOs on 2-D fields; on an ODE system (Lotka–Volterra) they are MLP vector fields stepped by RK4
(``MLPExpertConfig``, run in a ``BatchedMLP``), and everything below applies unchanged.

1. Pretrain one base FNO on the one-step pairs of every SEEN environment's training trajectories
   (standardised fields), Adam. Checkpointed every epoch (``base_train.pt``); kept as ``base.safetensors``.
2. For every seen environment, fine-tune K experts from the base. Before fine-tuning, expert k of
   environment e (seed ``expert_seed(seed, e, k)``) gets noise on ONE layer: the layer is drawn uniformly
   from the FNO's weight tensors (``train.noise_layers``: lifting, spectral, skip, channel-MLP and
   projection weights, no biases), the noise is ``N(0, (noise_scale * rms(W))^2)``; both are recorded.
   ``envs_per_step`` environments x K experts are trained together in one ``BatchedFNO`` (one Adam step
   updates them all, each on its own environment's data).
3. Validation (recorded per expert, and for the base model per environment), on the environment's
   held-out TEST trajectories: ``val_rmse`` = RMSE of an autoregressive rollout of ``val_rollout_steps``
   steps from frame 0 of each test trajectory, averaged over steps and trajectories (the paper's test
   protocol, shortened); ``val_rmse_one_step`` = RMSE of teacher-forced one-step predictions over the same
   frames. RMSE per frame over (C, H, W) of standardised fields (``metrics.rmse``).

Presets (``zoo_preset``; any field can be overridden): tiny = K 4, pretrain 10 epochs at lr 3e-3, fine-tune
10 epochs at lr 1e-3, batch 16, 10-step validation rollouts (one CPU core, minutes); small = K 16, 20 + 20
epochs, lr 1e-3 / 5e-4, batch 32; paper = K 100, Table 3 pretraining epochs, 50 fine-tuning epochs, lr 1e-4.
The expert architecture is ``expert_config(system, preset)`` with the dataset's channel count.

Finite checks: a base model or an environment's experts with a NaN/inf weight or validation RMSE (training
diverged, or NaN in the data) stop the build with an error naming the environment, before its shard is written,
so a zoo with NaN in it never looks finished.

Resumable: ``build.json`` pins what the zoo is (dataset identity, expert architecture, training settings);
a re-run with the same ones continues (base kept, finished environments kept, a missing/corrupt shard
redone), a different dataset or setting is refused before anything is written. Every file is written
atomically; the manifest last. Under torchrun, pretraining is data parallel, environments are sharded
across ranks (each writes its own shards), and rank 0 writes the manifest after a barrier.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from dynadiff_fast import config as config_mod
from dynadiff_fast import dist, io
from dynadiff_fast.experts import train as tr
from dynadiff_fast.experts import zoo as zoo_mod
from dynadiff_fast.profiling import nvtx_range
from dynadiff_fast.stages.common import Command, device_and_ranks, step_bar
from dynadiff_fast.state_dict import module_tensors, repeat_state_dict

log = logging.getLogger("dynadiff.zoo")

BUILD_FILE = "build.json"
BASE_CKPT = "base_train.pt"


# ------------------------------------------------------------------------------------------------
# config and presets
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ZooPreset:
    """Training settings of a zoo preset (``None`` fields of ``ZooBuildConfig`` are taken from here)."""

    experts_per_env: int
    pretrain_epochs: int
    finetune_epochs: int
    lr: float
    finetune_lr: float
    batch_size: int
    val_rollout_steps: int
    envs_per_step: int


# paper: 100 experts per seen environment (Sec. 4), Adam lr 1e-4, 50 fine-tuning epochs (App. C, Table 3); the
# batch size is not given in the paper (32 here); validation rollouts of 50 steps (App. B test protocol for
# Kolmogorov/NS). tiny/small: larger lr, few epochs (CPU minutes). envs_per_step stays below every preset's
# seen-environment count: the zoo checkpoints after each group.
ZOO_PRESETS: dict[str, ZooPreset] = {
    "tiny": ZooPreset(experts_per_env=4, pretrain_epochs=10, finetune_epochs=10, lr=3e-3, finetune_lr=1e-3,
                      batch_size=16, val_rollout_steps=10, envs_per_step=3),
    "bench": ZooPreset(experts_per_env=4, pretrain_epochs=10, finetune_epochs=20, lr=3e-3, finetune_lr=1e-3,
                       batch_size=16, val_rollout_steps=20, envs_per_step=3),
    "small": ZooPreset(experts_per_env=16, pretrain_epochs=20, finetune_epochs=20, lr=1e-3, finetune_lr=5e-4,
                       batch_size=32, val_rollout_steps=20, envs_per_step=4),
    "paper": ZooPreset(experts_per_env=100, pretrain_epochs=10, finetune_epochs=50, lr=1e-4, finetune_lr=1e-4,
                       batch_size=32, val_rollout_steps=50, envs_per_step=1),
}  # fmt: skip

# Where a system departs from its preset. paper: Table 3's pretraining epochs per system; validation rollouts of
# 100 steps for cylinder flow, lambda-omega and Lotka–Volterra (App. B; the whole 100-frame LV trajectory;
# App. H.6 gives the MLP, not its training: 100 pretraining epochs like lambda_omega); imported gridded data
# (``dynadiff import``; ERA5 in the paper): 50 pretraining, 20 fine-tuning epochs (Table 3).
# Navier-Stokes bench: its unsteady A >= 0.2 environments need long fine-tuning before an expert beats the pooled
# base by 2x (measured 2026-12-02, one seed, base / One-per-Env rollout RMSE in / out of domain: 20 epochs
# 1.49 / 1.68, 60 epochs 1.77 / 1.96, 100 epochs 0.0648 / 0.0336 = 1.93 / 0.0902 / 0.0438 = 2.06; zoo 644 s and
# One-per-Env's 25 fine-tunings ~750 s on one core). Batch 8 instead of more epochs also trains a better base
# (1.49 in-domain).
SYSTEM_OVERRIDES: dict[tuple[str, str], dict[str, Any]] = {
    ("paper", "cylinder_flow"): {"pretrain_epochs": 20, "val_rollout_steps": 100},
    ("paper", "lambda_omega"): {"pretrain_epochs": 100, "val_rollout_steps": 100},
    ("paper", "lotka_volterra"): {"pretrain_epochs": 100, "val_rollout_steps": 100},
    ("paper", "gridded"): {"pretrain_epochs": 50, "finetune_epochs": 20},
    ("bench", "navier_stokes"): {"finetune_epochs": 100},
}


def zoo_preset(system_name: str, preset: str) -> ZooPreset:
    """The zoo preset ``preset`` with ``system_name``'s departures from it (``SYSTEM_OVERRIDES``)."""
    return config_mod.preset_of(ZOO_PRESETS, preset, SYSTEM_OVERRIDES.get((preset, system_name)))


@dataclass(frozen=True)
class ZooBuildConfig:
    data: str = field(default="", metadata={"help": "dataset .h5 written by `dynadiff simulate`"})
    out: str = field(default="", metadata={"help": "zoo folder (created; an existing one is resumed)"})
    experts_per_env: int | None = field(default=None, metadata={"help": "K: experts per seen environment"})
    preset: str = field(default="tiny", metadata={"help": "tiny | bench | small | paper (expert size and training)"})
    seed: int = field(default=0, metadata={"help": "seed of pretraining and of every expert's noise and order"})
    pretrain_epochs: int | None = field(default=None, metadata={"help": "base-model epochs; None: from the preset"})
    finetune_epochs: int | None = field(default=None, metadata={"help": "expert epochs; None: from the preset"})
    lr: float | None = field(default=None, metadata={"help": "pretraining Adam lr; None: from the preset"})
    finetune_lr: float | None = field(default=None, metadata={"help": "fine-tuning Adam lr; None: from the preset"})
    batch_size: int | None = field(default=None, metadata={"help": "one-step pairs per minibatch (per expert)"})
    noise_scale: float = field(default=0.02, metadata={"help": "noise on one layer, relative to its RMS"})
    val_rollout_steps: int | None = field(default=None, metadata={"help": "validation rollout length"})
    envs_per_step: int | None = field(default=None, metadata={"help": "environments fine-tuned together"})
    expert: dict[str, Any] = field(default_factory=dict, metadata={"help": "ExpertConfig field overrides"})
    device: str | None = field(default=None, metadata={"help": "cpu | cuda (default: cuda when available)"})
    progress: bool = field(
        default=True, metadata={"help": "progress: a tqdm bar on a terminal, else a log line every 30 s (rank 0)"}
    )


# Settings that change what the zoo holds; a resumed build must match them (data path, out, device,
# envs_per_step and progress only change how it is computed).
_IDENTITY_FIELDS = (
    "experts_per_env",
    "preset",
    "seed",
    "pretrain_epochs",
    "finetune_epochs",
    "lr",
    "finetune_lr",
    "batch_size",
    "noise_scale",
    "val_rollout_steps",
    "expert",
)


def resolve(cfg: ZooBuildConfig, system_name: str, n_frames: int) -> ZooBuildConfig:
    """``cfg`` with every preset-derived ``None`` filled in, validated against a dataset of ``n_frames``
    frames per trajectory (frame 0 included); the preset's validation rollout is capped to fit."""
    preset = zoo_preset(system_name, cfg.preset)
    preset = dataclasses.replace(preset, val_rollout_steps=min(preset.val_rollout_steps, n_frames - 1))
    cfg = config_mod.fill_unset(cfg, preset)
    if cfg.val_rollout_steps > n_frames - 1:
        raise ValueError(
            f"val_rollout_steps: {cfg.val_rollout_steps} exceeds the dataset's {n_frames - 1} steps per trajectory"
        )
    for name in ("experts_per_env", "batch_size", "envs_per_step", "val_rollout_steps"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"{name}: expected an integer >= 1, got {getattr(cfg, name)}")
    for name in ("pretrain_epochs", "finetune_epochs"):
        if getattr(cfg, name) < 0:
            raise ValueError(f"{name}: expected an integer >= 0, got {getattr(cfg, name)}")
    for name in ("lr", "finetune_lr"):
        if not (getattr(cfg, name) > 0 and math.isfinite(getattr(cfg, name))):
            raise ValueError(f"{name}: expected a finite value > 0, got {getattr(cfg, name)}")
    if not (cfg.noise_scale >= 0 and math.isfinite(cfg.noise_scale)):
        raise ValueError(f"noise_scale: expected a finite value >= 0, got {cfg.noise_scale}")
    return cfg


# ------------------------------------------------------------------------------------------------
# dataset identity and the build fingerprint
# ------------------------------------------------------------------------------------------------
def dataset_info(ds) -> dict[str, Any]:
    """What the manifest records about the dataset (``identity`` fields + where it was read from)."""
    return {"path": str(Path(ds.path).resolve()), **ds.identity(), "dt_frame": ds.dt_frame}


def build_identity(cfg: ZooBuildConfig, ds, expert_cfg) -> dict[str, Any]:
    settings = {k: v for k, v in config_mod.to_dict(cfg).items() if k in _IDENTITY_FIELDS}
    return {
        "dataset": ds.identity(),
        "expert_config": expert_cfg.to_dict(),
        "settings": settings,
    }


def check_or_pin_identity(out: Path, identity: dict[str, Any], info: dist.DistInfo) -> None:
    """Refuse to resume into a zoo built from other data or settings; pin a fresh one (rank 0)."""
    path = out / BUILD_FILE
    if path.exists():
        pinned = io.read_json(path, "zoo build record")
        if pinned != identity:
            raise ValueError(_identity_mismatch(out, pinned, identity))
    elif info.is_main:
        io.write_json(path, identity)
    dist.barrier(info)


def _identity_mismatch(out: Path, pinned: dict, identity: dict) -> str:
    lines = [f"out: {out} holds a zoo built with other data or settings; choose another --out or delete it."]
    if pinned.get("dataset", {}).get("system_name") != identity["dataset"]["system_name"]:
        lines.append(
            f"  dataset system: zoo has {pinned.get('dataset', {}).get('system_name')!r}, "
            f"this dataset is {identity['dataset']['system_name']!r}"
        )
    for section in ("dataset", "expert_config", "settings"):
        old, new = pinned.get(section, {}), identity[section]
        for key in sorted(set(old) | set(new)):
            if old.get(key) != new.get(key) and key != "system_name":
                lines.append(
                    f"  {section}.{key}: zoo has {io.short_repr(old.get(key))}, this run has {io.short_repr(new.get(key))}"
                )
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------
# stage 1: the base model
# ------------------------------------------------------------------------------------------------
def pretrain_base(
    out: Path, expert_cfg, train: torch.Tensor, cfg: ZooBuildConfig, info: dist.DistInfo
) -> dict[str, torch.Tensor]:
    """Pretrain (or resume, or reuse) the base model; returns its state dict (identical on all ranks)."""
    base_path = out / zoo_mod.BASE_FILE
    record_path = out / "base.json"
    if record_path.exists():
        rec = io.read_json(record_path, "zoo base record")
        if base_path.exists() and io.sha256_file(base_path) == rec["sha256"]:
            log.info("base model: reusing %s", base_path)
            return io.load_safetensors(base_path, rec["sha256"], "zoo base model")
        log.warning("base model: %s is missing or corrupt; pretraining again", base_path)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)  # the base model's initial weights, without touching the caller's RNG
        model = expert_cfg.build().to(train.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    generator = torch.Generator().manual_seed(cfg.seed)
    losses: list[float] = []
    ckpt = out / BASE_CKPT
    if ckpt.exists():
        state = torch.load(ckpt, map_location=train.device, weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"])
        losses = list(state["losses"])
        log.info("base model: resuming pretraining after epoch %d", len(losses))
    steps = math.ceil(train.shape[0] * train.shape[1] * (train.shape[2] - 1) / cfg.batch_size)
    bar = step_bar(cfg.pretrain_epochs * steps, len(losses) * steps, "pretrain base", cfg.progress, info)
    with nvtx_range("zoo/pretrain"):
        for _ in range(len(losses), cfg.pretrain_epochs):
            losses.append(tr.pretrain_epoch(model, optimizer, train, cfg.batch_size, generator, info, bar.update))
            bar.set_postfix(loss=f"{losses[-1]:.3g}")
            if info.is_main:
                state = {"model": module_tensors(model), "optimizer": optimizer.state_dict()}
                state.update(generator=generator.get_state(), losses=torch.tensor(losses, dtype=torch.float64))
                with io.atomic_path(ckpt) as tmp:
                    torch.save(state, tmp)
    bar.close()
    if info.is_main:
        check_finite("the pretrained base model", weights=module_tensors(model))
        sha = io.save_safetensors(base_path, module_tensors(model))
        io.write_json(record_path, {"file": zoo_mod.BASE_FILE, "sha256": sha, "train_loss": losses})
        ckpt.unlink(missing_ok=True)
    dist.barrier(info)
    # Every rank continues from the saved file, so all experts start from exactly the same base.
    return io.load_safetensors(base_path, io.read_json(record_path)["sha256"], "zoo base model")


# ------------------------------------------------------------------------------------------------
# stage 2: experts, a group of environments at a time
# ------------------------------------------------------------------------------------------------
def env_record_path(out: Path, env: int) -> Path:
    return out / zoo_mod.env_shard_name(env).replace(".safetensors", ".json")


def env_done(out: Path, env: int) -> bool:
    """True when environment ``env``'s shard and record are complete and agree (checksum)."""
    rec_path, shard = env_record_path(out, env), out / zoo_mod.env_shard_name(env)
    if not (rec_path.exists() and shard.exists()):
        return False
    try:
        rec = io.read_json(rec_path, "zoo environment record")
    except ValueError:
        return False
    if io.sha256_file(shard) != rec.get("sha256"):
        log.warning("environment %d: shard %s is corrupt; fine-tuning it again", env, shard)
        return False
    return True


def check_finite(what: str, **values: torch.Tensor | dict[str, torch.Tensor]) -> None:
    """Refuse NaN/inf in ``values`` (tensors, or dicts of weight tensors) of ``what``: a ``ValueError`` naming
    the first bad entry, so a diverged training fails the build instead of writing NaN into the zoo."""
    for name, value in values.items():
        tensors = value if isinstance(value, dict) else {"": value}
        for key, t in tensors.items():
            if not bool(torch.isfinite(t).all()):
                label = f"{name} ({key})" if key else name
                raise ValueError(
                    f"zoo: {what}: non-finite {label} (training diverged? lower --lr / --finetune-lr, "
                    "or check the dataset for NaN)"
                )


def validate(experts, test: torch.Tensor, steps: int, chunk: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Validation RMSE of E experts on one environment's test trajectories ``[B, T+1, *frame]``.

    Returns ``(rollout, one_step)``, each ``[E]`` float64: the mean over trajectories and the first
    ``steps`` steps of the autoregressive-rollout RMSE (``evaluate_experts``) and of the teacher-forced
    one-step RMSE (``chunk`` experts at a time).
    """
    from dynadiff_fast.experts.evaluate import evaluate_experts
    from dynadiff_fast.metrics import rmse

    window = test[:, : steps + 1]
    x, y = window[:, :-1].flatten(0, 1), window[:, 1:].flatten(0, 1)  # [B*steps, C, H, W]
    with torch.no_grad(), nvtx_range("zoo/validate"):
        rollout = evaluate_experts(experts, window[None], steps, progress=False).mean(1)
        one_step = [
            rmse(
                experts.select(slice(e0, e0 + chunk))(x),
                y.expand(min(chunk, experts.num_experts - e0), *y.shape),
                frame_dims=test.dim() - 2,
            )
            for e0 in range(0, experts.num_experts, chunk)
        ]
    return rollout.double().cpu(), torch.cat(one_step).mean(1).double().cpu()


def finetune_group(
    out: Path,
    envs: Sequence[int],
    rows: Sequence[int],
    ds_params: torch.Tensor,
    base: dict[str, torch.Tensor],
    expert_cfg,
    train: torch.Tensor,
    test: torch.Tensor,
    cfg: ZooBuildConfig,
    bar,
) -> None:
    """Fine-tune K experts for each environment of ``envs`` (rows ``rows`` of ``train``/``test``) in one
    ``BatchedFNO`` (``BatchedMLP``), validate them and the base, and write each environment's shard and record."""
    from dynadiff_fast.experts.stacked import experts_type

    batched = experts_type(expert_cfg)

    k_per = cfg.experts_per_env
    n_exp = len(envs) * k_per
    base = {k: v.to(train.device) for k, v in base.items()}
    stacked = {k: v.contiguous() for k, v in repeat_state_dict(base, n_exp).items()}  # a copy each: trained apart
    generators, noise = [], []
    for e in range(n_exp):
        env, k = envs[e // k_per], e % k_per
        seed = tr.expert_seed(cfg.seed, env, k)
        g = torch.Generator().manual_seed(seed)
        layer, sigma = tr.perturb_one_layer(stacked, e, g, cfg.noise_scale)
        generators.append(g)
        noise.append({"k": k, "seed": seed, "noise_layer": layer, "noise_sigma": sigma})
    experts = batched.from_state_dicts(expert_cfg, [{k: v[e] for k, v in stacked.items()} for e in range(n_exp)])
    experts = experts.to(train.device)
    env_of_expert = torch.tensor(rows).repeat_interleave(k_per)
    history = tr.finetune_experts(
        experts, train, env_of_expert, generators, cfg.finetune_epochs, cfg.finetune_lr, cfg.batch_size, bar.update
    )
    experts.eval()
    base_model = batched.from_state_dicts(expert_cfg, [base]).to(train.device).eval()
    weights = experts.stacked()
    for j, (env, row) in enumerate(zip(envs, rows)):
        sel = list(range(j * k_per, (j + 1) * k_per))
        val, val1 = validate(experts.select(sel), test[row], cfg.val_rollout_steps)
        base_val, base_val1 = validate(base_model, test[row], cfg.val_rollout_steps)
        tensors = {
            zoo_mod.expert_prefix(k) + key: w[e].detach() for k, e in enumerate(sel) for key, w in weights.items()
        }
        check_finite(f"environment {env}", weights=tensors, val_rmse=val, val_rmse_one_step=val1,
                     base_val_rmse=base_val, base_val_rmse_one_step=base_val1)  # fmt: skip
        sha = io.save_safetensors(out / zoo_mod.env_shard_name(env), tensors)
        records = [
            {
                **noise[e],
                "prefix": zoo_mod.expert_prefix(noise[e]["k"]),
                "train_loss": history[:, e].tolist(),
                "val_rmse": float(val[i]),
                "val_rmse_one_step": float(val1[i]),
            }
            for i, e in enumerate(sel)
        ]
        io.write_json(
            env_record_path(out, env),
            {
                "env_index": env,
                "params": ds_params[env].tolist(),
                "shard": zoo_mod.env_shard_name(env),
                "sha256": sha,
                "base_val_rmse": float(base_val[0]),
                "base_val_rmse_one_step": float(base_val1[0]),
                "experts": records,
            },
        )
        log.info(
            "environment %d: expert val RMSE %.4g (mean of %d), base %.4g",
            env, float(val.mean()), k_per, float(base_val[0]),
        )  # fmt: skip


# ------------------------------------------------------------------------------------------------
# stage 3: the manifest
# ------------------------------------------------------------------------------------------------
def write_manifest(out: Path, ds, cfg: ZooBuildConfig, expert_cfg, seen: Sequence[int], seconds: float) -> dict:
    """Merge every environment's record into ``manifest.json`` (atomically); returns the manifest."""
    base = io.read_json(out / "base.json", "zoo base record")
    experts, shards, base_val, base_val1 = [], {}, {}, {}
    for env in seen:
        rec = io.read_json(env_record_path(out, env), "zoo environment record")
        shards[rec["shard"]] = rec["sha256"]
        base_val[str(env)], base_val1[str(env)] = rec["base_val_rmse"], rec["base_val_rmse_one_step"]
        for r in rec["experts"]:
            experts.append({"env_index": env, "params": rec["params"], "shard": rec["shard"], **r})
    manifest = {
        "format": zoo_mod.FORMAT,
        "version": zoo_mod.VERSION,
        "system_name": ds.system_name,
        "expert_config": expert_cfg.to_dict(),
        "param_shapes": zoo_mod.param_shapes(expert_cfg),
        "dataset": dataset_info(ds),
        "build": config_mod.to_dict(cfg),
        "noise": {
            "layer": "one per expert, uniform over train.noise_layers (weight tensors, no biases)",
            "distribution": "N(0, sigma^2), sigma = noise_scale * rms(layer weights); complex: sigma^2/2 per part",
            "noise_scale": cfg.noise_scale,
        },
        "validation": {
            "trajectories": "the environment's held-out test trajectories",
            "val_rmse": f"autoregressive rollout from frame 0, {cfg.val_rollout_steps} steps, mean RMSE",
            "val_rmse_one_step": f"teacher-forced one-step predictions over the same {cfg.val_rollout_steps} steps",
            "rmse": "per frame over (C, H, W) of standardised fields (metrics.rmse)",
            "rollout_steps": cfg.val_rollout_steps,
        },
        "base": {**base, "val_rmse": base_val, "val_rmse_one_step": base_val1},
        "shards": shards,
        "experts": experts,
        "seconds": round(seconds, 2),
    }
    io.write_json(out / zoo_mod.MANIFEST, manifest)
    return manifest


# ------------------------------------------------------------------------------------------------
# the command
# ------------------------------------------------------------------------------------------------
def _expert_config(ds, cfg: ZooBuildConfig):
    """The experts' architecture for the dataset's frames: FNO experts for fields ``[C, H, W]``, MLP vector
    fields stepped by RK4 of the dataset's frame spacing for ODE states ``[C]``."""
    from dynadiff_fast.experts.configs import ExpertConfig, MLPExpertConfig, expert_config

    shape = tuple(ds.frame_shape)
    if len(shape) == 3:
        kind, sizes = ExpertConfig, {"in_channels": shape[0], "out_channels": shape[0]}
    elif len(shape) == 1:
        kind, sizes = MLPExpertConfig, {"state_dim": shape[0], "dt": float(ds.dt_frame)}
    else:
        raise ValueError(
            f"data: {ds.path} holds {ds.system_name} frames of shape {shape}; experts step 2-D fields [C, H, W] "
            "(FNO) or ODE states [C] (MLP)"
        )
    ecfg = expert_config(ds.system_name, cfg.preset, **{**sizes, **cfg.expert})
    if not isinstance(ecfg, kind):
        raise ValueError(
            f"data: {ds.system_name} experts are {type(ecfg).__name__}, but its frames {shape} need {kind.__name__}"
        )
    return ecfg


def build_zoo(cfg: ZooBuildConfig) -> Path:
    """Build (or resume) the zoo described by ``cfg``; returns the zoo folder."""
    from dynadiff_fast.data import EnvDataset

    if not cfg.data:
        raise ValueError("data: pass the dataset file (--data FILE.h5, from `dynadiff simulate`)")
    if not cfg.out:
        raise ValueError("out: pass the zoo folder (--out DIR)")
    t0 = time.perf_counter()
    device, info = device_and_ranks(cfg.device)
    out = Path(cfg.out)
    try:
        with io.output_lock(out, "dynadiff zoo build", enabled=info.is_main):
            with EnvDataset.open(cfg.data) as ds:
                cfg = resolve(cfg, ds.system_name, ds.n_frames)
                expert_cfg = _expert_config(ds, cfg)
                log.info(
                    "%s: %d seen environments x %d experts; pretrain %d epochs (lr %g), fine-tune %d epochs (lr %g), batch %d",
                    ds.system_name, len(ds.split["seen"]), cfg.experts_per_env, cfg.pretrain_epochs, cfg.lr,
                    cfg.finetune_epochs, cfg.finetune_lr, cfg.batch_size,
                )  # fmt: skip
                check_or_pin_identity(out, build_identity(cfg, ds, expert_cfg), info)
                if info.is_main:
                    config_mod.save_resolved(cfg, out / "config.yaml", seed=cfg.seed)
                seen = ds.split["seen"].tolist()
                if cfg.batch_size < info.world_size:
                    raise ValueError(f"batch_size: {cfg.batch_size} is smaller than the {info.world_size} ranks")
                train = ds.train(seen).to(device)
                base = pretrain_base(out, expert_cfg, train, cfg, info)
                mine = [i for i in dist.shard(list(range(len(seen))), info) if not env_done(out, seen[i])]
                n_done = len(dist.shard(seen, info)) - len(mine)
                if n_done:
                    log.info("experts: %d environment(s) already finished, %d to go", n_done, len(mine))
                # Only the validation window of the test trajectories is needed.
                test = ds.load(seen, slice(ds.n_train_traj, ds.n_traj), slice(0, cfg.val_rollout_steps + 1)).to(device)
                steps_per = tr.finetune_steps(train.shape[1], train.shape[2], cfg.finetune_epochs, cfg.batch_size)
                groups = [mine[i : i + cfg.envs_per_step] for i in range(0, len(mine), cfg.envs_per_step)]
                bar = step_bar(steps_per * len(groups), 0, "fine-tune experts", cfg.progress, info)
                for rows in groups:
                    bar.set_postfix(envs=",".join(str(seen[r]) for r in rows))
                    envs = [seen[r] for r in rows]
                    finetune_group(out, envs, rows, ds.params, base, expert_cfg, train, test, cfg, bar)
                bar.close()
                dist.barrier(info)
                if info.is_main:
                    manifest = write_manifest(out, ds, cfg, expert_cfg, seen, time.perf_counter() - t0)
                    _summary(manifest)
                    print(zoo_mod.Zoo.open(out))
                dist.barrier(info)
    finally:
        dist.cleanup(info)
    return out


def _summary(manifest: dict) -> None:
    val = torch.tensor([r["val_rmse"] for r in manifest["experts"]])
    base = torch.tensor([manifest["base"]["val_rmse"][str(r["env_index"])] for r in manifest["experts"]])
    log.info(
        "zoo: %d experts in %.1f s; validation rollout RMSE: experts %.4g (mean), base model %.4g; "
        "experts beat the base on %d/%d",
        len(val), manifest["seconds"], float(val.mean()), float(base.mean()), int((val < base).sum()), len(val),
    )  # fmt: skip


def _run(cfg: ZooBuildConfig) -> int:
    build_zoo(cfg)
    return 0


COMMAND = Command(config=ZooBuildConfig, run=_run)
