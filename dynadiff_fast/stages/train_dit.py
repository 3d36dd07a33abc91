"""``dynadiff train dit``: train the latent DiT jointly with the dynamics-informed prompter (Sec. 3.1.3, 3.3).

    dynadiff train dit --zoo ZOO --vae VAE_RUN --data FILE.h5 --out RUN [--preset tiny|small|paper]
    torchrun --nproc-per-node 8 -m dynadiff_fast.cli train dit ...          (data parallel, one rank per GPU)

Training pairs (one per batch row): a zoo expert ``i`` drawn uniformly, its latent ``z_i`` (the VAE encoder mean
of its weight graph, computed once), and an observation sequence from its environment's *training* trajectories:
a random trajectory, a random start and a random length ``l`` in ``1..obs_len`` (Sec. 3.3: any length works at
test time). Loss per batch:

    L = || target - DiT(x_n, n, prompt) ||^2 + aux_weight * || e_std - aux_head(prompt) ||^2
    prompt = Prompter(obs[:l]),  x_n = sqrt(abar_n) z_std + sqrt(1 - abar_n) eps,  z_std = (z - mean) / std

with ``target`` = eps or v (``dit.prediction``), latents standardised by zoo statistics, the prompt replaced by
the learned null embedding with probability ``dit.cond_dropout`` (classifier-free guidance). With ``mix_prob``
> 0 (bench), that fraction of rows are vicinal (``generative.vicinal``): expert and observations mixed with a
neighbouring environment's, the latent being the VAE encoding of the mixed weights. AdamW, linear
warm-up, gradient clipping, EMA of all weights (inference uses the EMA). Checkpoints every ``checkpoint_every`` steps
(``generative.checkpoint``: atomic, resumable; a re-run with the same ``--out`` resumes). At the end,
``quality.json`` records how close generated latents come to each training environment's zoo latents (relative to
the unconditional mean; below 1 means the prompt steers generation). Run-folder layout: ``generative.dynadiff``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from dynadiff_fast import config as config_mod
from dynadiff_fast import dist, io
from dynadiff_fast.generative import vicinal as vicinal_mod
from dynadiff_fast.generative.dit import DIT_PRESETS
from dynadiff_fast.generative.dynadiff import FORMAT, MANIFEST, VERSION, DynaDiffModel, build_model
from dynadiff_fast.generative.prompter import PROMPTER_PRESETS
from dynadiff_fast.profiling import nvtx_range
from dynadiff_fast.stages.common import LOG_FILE, Command, append_log, device_and_ranks, step_bar, truncate_log

log = logging.getLogger("dynadiff.train_dit")


# ----------------------------------------------------------------------------------------------------------------
# Config and presets
# ----------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DiTTrainPreset:
    steps: int
    batch_size: int
    lr: float
    ema_decay: float
    checkpoint_every: int
    mix_prob: float = 0.0
    mix_span: float = 0.0


# paper: Adam lr 1e-4 (App. C); steps and batch are not given. tiny: minutes on one CPU core.
TRAIN_PRESETS = {
    "tiny": DiTTrainPreset(steps=1000, batch_size=16, lr=1e-3, ema_decay=0.995, checkpoint_every=250),
    # bench: half the rows mixed with a neighbouring environment (generative.vicinal; the VAE's bench preset mixes too)
    "bench": DiTTrainPreset(
        steps=1000, batch_size=16, lr=1e-3, ema_decay=0.995, checkpoint_every=250, mix_prob=0.5, mix_span=0.5
    ),  # fmt: skip
    "small": DiTTrainPreset(steps=30000, batch_size=128, lr=2e-4, ema_decay=0.999, checkpoint_every=2000),
    "paper": DiTTrainPreset(steps=100000, batch_size=128, lr=1e-4, ema_decay=0.9999, checkpoint_every=5000),
}


@dataclass(frozen=True)
class TrainDiTConfig:
    zoo: str = field(default="", metadata={"help": "zoo folder (`dynadiff zoo build`)"})
    vae: str = field(default="", metadata={"help": "VAE run folder (`dynadiff train vae`)"})
    data: str = field(default="", metadata={"help": "dataset .h5 the zoo was built from"})
    out: str = field(default="", metadata={"help": "run folder (created; an existing one is resumed)"})
    preset: str = field(default="tiny", metadata={"help": "tiny | bench | small | paper (model size and schedule)"})
    seed: int = field(default=0, metadata={"help": "seed of initialisation and batch sampling"})
    steps: int | None = field(default=None, metadata={"help": "optimizer steps (default: preset)"})
    batch_size: int | None = field(default=None, metadata={"help": "pairs per step, all ranks (default: preset)"})
    lr: float | None = field(default=None, metadata={"help": "AdamW learning rate (default: preset)"})
    ema_decay: float | None = field(default=None, metadata={"help": "EMA decay (default: preset)"})
    checkpoint_every: int | None = field(default=None, metadata={"help": "steps between checkpoints (default: preset)"})
    mix_prob: float | None = field(
        default=None,
        metadata={"help": "rows mixed with a neighbouring environment (generative.vicinal; default: preset)"},
    )
    mix_span: float | None = field(
        default=None, metadata={"help": "mixing weights drawn in [-span, 1 + span] (default: preset)"}
    )
    warmup_steps: int = field(default=100, metadata={"help": "linear learning-rate warm-up steps"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay"})
    grad_clip: float = field(default=1.0, metadata={"help": "gradient-norm clip (0: off)"})
    aux_weight: float = field(default=1.0, metadata={"help": "weight of the prompter's L_aux"})
    obs_len: int = field(default=10, metadata={"help": "max observation length L (lengths drawn in 1..L)"})
    obs_window: int = field(default=0, metadata={"help": "observation windows lie in the first N frames (0: all)"})
    max_traj: int = field(default=0, metadata={"help": "training trajectories per env kept in memory (0: all)"})
    pool_gb: float = field(default=4.0, metadata={"help": "memory cap of the in-memory observation pool (GiB)"})
    log_every: int = field(default=50, metadata={"help": "steps between log lines"})
    dit: dict[str, Any] = field(default_factory=dict, metadata={"help": "DiTConfig overrides (on the preset)"})
    prompter: dict[str, Any] = field(default_factory=dict, metadata={"help": "PrompterConfig overrides"})
    device: str | None = field(default=None, metadata={"help": "cpu | cuda (default: cuda when available)"})
    progress: bool = field(
        default=True, metadata={"help": "progress: a tqdm bar on a terminal, else a log line every 30 s (rank 0)"}
    )


def resolve(cfg: TrainDiTConfig) -> TrainDiTConfig:
    """Fill preset-derived ``None`` fields and validate."""
    cfg = config_mod.fill_unset(cfg, config_mod.preset_of(TRAIN_PRESETS, cfg.preset))
    for name in ("steps", "batch_size", "checkpoint_every", "obs_len", "log_every"):
        if not isinstance(getattr(cfg, name), int) or getattr(cfg, name) < 1:
            raise ValueError(f"{name}: expected an int >= 1, got {getattr(cfg, name)!r}")
    if not (cfg.lr > 0 and math.isfinite(cfg.lr)):
        raise ValueError(f"lr: expected a finite value > 0, got {cfg.lr}")
    if not 0 <= cfg.ema_decay < 1:
        raise ValueError(f"ema_decay: expected a value in [0, 1), got {cfg.ema_decay}")
    vicinal_mod.check(cfg.mix_prob, cfg.mix_span)
    for name in ("zoo", "vae", "data", "out"):
        if not getattr(cfg, name):
            raise ValueError(f"{name}: required (pass --{name})")
    model_configs(cfg)  # unknown dit/prompter keys fail now, before any work
    return cfg


def model_configs(cfg: TrainDiTConfig):
    """The DiT and prompter configs: the preset's, with ``cfg.dit`` / ``cfg.prompter`` overrides applied."""
    return (
        config_mod.preset_of(DIT_PRESETS, cfg.preset, cfg.dit, "dit"),
        config_mod.preset_of(PROMPTER_PRESETS, cfg.preset, cfg.prompter, "prompter"),
    )


# ----------------------------------------------------------------------------------------------------------------
# Data: zoo latents and observation windows
# ----------------------------------------------------------------------------------------------------------------
def check_compatible(ds, zoo, vae_meta: dict[str, Any] | None) -> None:
    """The dataset, the zoo and the VAE must describe the same system (else a clear error)."""
    zoo.check_dataset(ds)
    sys_vae = (vae_meta or {}).get("system_name")
    if sys_vae is not None and sys_vae != zoo.system_name:
        raise ValueError(f"vae: the VAE run was trained on a {sys_vae} zoo, this zoo is {zoo.system_name}")


class ObservationPool:
    """Training trajectories of the zoo's environments in memory, ``[n_env, n_traj, T, *frame]`` (standardised),
    and the random observation windows drawn from them.

    The first ``max_traj`` training trajectories (0: all) and first ``window`` frames (0: all) of each environment
    are kept; when that exceeds ``pool_gb`` GiB, fewer trajectories are kept (then fewer frames), with a log line:
    paper-sized datasets (e.g. 100 x 2000 frames of 3 x 64 x 64 per environment) do not fit in memory.
    """

    def __init__(self, ds, envs: list[int], max_traj: int = 0, window: int = 0, pool_gb: float = 4.0):
        n_traj = ds.n_train_traj if max_traj <= 0 else min(max_traj, ds.n_train_traj)
        n_frames = ds.n_frames if window <= 0 else min(window, ds.n_frames)
        frame_bytes = 4 * math.prod(ds.frame_shape) * len(envs)
        budget = int(pool_gb * 2**30) // frame_bytes  # frames per environment that fit
        if n_traj * n_frames > budget:
            fit_traj = max(1, min(n_traj, budget // n_frames))
            fit_frames = max(2, min(n_frames, budget // fit_traj))
            log.warning("observation pool: %d trajectories x %d frames per environment exceed pool_gb=%.1f; keeping "
                        "%d x %d (raise --pool-gb or set --max-traj / --obs-window)", n_traj, n_frames, pool_gb,
                        fit_traj, fit_frames)  # fmt: skip
            n_traj, n_frames = fit_traj, fit_frames
        self.envs = envs
        self.row = {e: r for r, e in enumerate(envs)}
        self.data = ds.load(envs, slice(0, n_traj), slice(0, n_frames), normalized=True)

    def sample(self, env_rows: torch.Tensor, obs_len: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Windows ``[B, obs_len, *frame]`` (padded past each length by repeating frames) and lengths ``[B]``."""
        B = env_rows.numel()
        n_traj, T = self.data.shape[1], self.data.shape[2]
        L = min(obs_len, T)
        lengths = torch.randint(1, L + 1, (B,), generator=g)
        traj = torch.randint(0, n_traj, (B,), generator=g)
        start = (torch.rand(B, generator=g) * (T - lengths + 1)).long()
        frames = (start[:, None] + torch.arange(L)[None]).clamp(max=T - 1)
        return self.data[env_rows[:, None], traj[:, None], frames], lengths


# ----------------------------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------------------------
def write_manifest(out: Path, cfg: TrainDiTConfig, ds, zoo, latent_shape, reference_envs: list[int]) -> dict:

    dit_cfg, prompter_cfg = model_configs(cfg)
    doc = {
        "format": FORMAT,
        "version": VERSION,
        "system_name": ds.system_name,
        "channel_names": list(ds.channel_names),
        "param_names": list(ds.param_names),
        "frame_shape": list(ds.frame_shape),
        "mean": ds.mean.tolist(),
        "std": ds.std.tolist(),
        "dt_frame": ds.dt_frame,
        "expert_config": zoo.config.to_dict(),
        "vae_run": os.path.relpath(Path(cfg.vae).resolve(), out.resolve()),
        "zoo": str(Path(cfg.zoo).resolve()),
        "data": str(Path(cfg.data).resolve()),
        "latent_shape": list(latent_shape),
        "obs_len": cfg.obs_len,
        "reference_envs": reference_envs,
        "dit": config_mod.to_dict(dit_cfg),
        "prompter": config_mod.to_dict(prompter_cfg),
    }
    existing = out / MANIFEST
    if existing.exists():
        old = io.read_json(existing, "DynaDiff run manifest")
        keys = ("system_name", "frame_shape", "latent_shape", "dit", "prompter", "expert_config", "reference_envs")
        diff = [k for k in keys if old.get(k) != doc[k]]
        if diff:
            raise ValueError(f"out: {out} holds a run with different {diff}; use a new --out or the same settings")
    io.write_json(existing, doc)
    return doc


@torch.no_grad()
def reference_prompts(model: DynaDiffModel, pool: ObservationPool, obs_len: int) -> torch.Tensor:
    """One prompt per pool environment: its first training trajectory's first ``obs_len`` frames."""
    L = min(obs_len, pool.data.shape[2])
    was = model.training
    model.eval()
    p = model.prompter(pool.data[:, 0, :L].to(model.latent_mean.device))
    model.train(was)
    return p


def lr_at(step: int, cfg: TrainDiTConfig) -> float:
    return cfg.lr * min(1.0, (step + 1) / max(cfg.warmup_steps, 1))


@dataclass
class TrainingSet:
    """What every step draws from: the zoo's latents ``z [E, *latent]``, each expert's pool row and environment
    parameters, the observation pool, and for vicinal rows (``mix_prob > 0``) the neighbourhoods, the frozen VAE
    and graph, and the normalised zoo weights ``values [E, total_len]`` that mixed rows are encoded from."""

    z: torch.Tensor
    rows: torch.Tensor
    params: torch.Tensor
    pool: ObservationPool
    envs: list[int]
    vicinal: Any = None
    vae: Any = None
    graph: Any = None
    values: torch.Tensor | None = None


def training_set(cfg: TrainDiTConfig, zoo, ds, vae, graph, normalizer, device: torch.device) -> TrainingSet:
    from dynadiff_fast.generative.vae import encode_zoo, zoo_tokens

    envs = sorted(set(zoo.env_index.tolist()))
    pool = ObservationPool(ds, envs, cfg.max_traj, cfg.obs_window, cfg.pool_gb)
    z = encode_zoo(zoo, vae, graph, normalizer, device)
    rows = torch.tensor([pool.row[int(e)] for e in zoo.env_index])  # expert -> pool row
    data = TrainingSet(z, rows, zoo.params.float().to(device), pool, envs)
    data.vicinal = vicinal_mod.zoo_vicinity(zoo, cfg.mix_prob, cfg.mix_span)
    if data.vicinal is not None:  # mixed rows' latents: the VAE encoding of the mixed weights, each step
        data.vae, data.graph = vae.eval().requires_grad_(False), graph
        data.values = normalizer.normalize(zoo_tokens(zoo, graph)).packed()[0].to(device)
    return data


def build_models(manifest: dict, data: TrainingSet, zoo, cfg: TrainDiTConfig, device: torch.device):
    """The model (standardisations fitted on the zoo and on 512 observation windows), its EMA and AdamW;
    identically initialised on every rank."""
    torch.manual_seed(cfg.seed)
    model = build_model(manifest).to(device)
    model.fit_latent_stats(data.z)
    model.fit_param_stats(zoo.params)
    g_fit = torch.Generator().manual_seed(cfg.seed)
    rows = data.rows[torch.randint(len(data.rows), (512,), generator=g_fit)]
    fit_obs, fit_len = data.pool.sample(rows, cfg.obs_len, g_fit)
    model.prompter.fit_normalization(fit_obs.to(device), fit_len.to(device))
    ema = build_model(manifest).to(device)
    ema.load_state_dict(model.state_dict())
    ema.requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    return model, ema, opt


def sample_batch(data: TrainingSet, model: DynaDiffModel, cfg: TrainDiTConfig, size: int, g: torch.Generator,
                 device: torch.device):  # fmt: skip
    """One step's rows: ``(obs, lengths, z, params, n, eps, drop)`` on ``device`` and, for vicinal training,
    ``mix = (partner obs, partner lengths, partner params, lambda)`` with ``z`` the mixed weights' encoding."""
    from dynadiff_fast.weightspace.graph import NodeTokens

    idx = torch.randint(len(data.rows), (size,), generator=g)
    obs, lengths = data.pool.sample(data.rows[idx], cfg.obs_len, g)
    n = torch.randint(0, model.schedule.T, (size,), generator=g)
    eps = torch.randn((size, *data.z.shape[1:]), generator=g)
    drop = torch.rand(size, generator=g) < model.cfg.cond_dropout
    z, params = data.z[idx.to(data.z.device)], data.params[idx.to(device)]
    batch = [t.to(device) for t in (obs, lengths, z, params, n, eps, drop)]
    if data.vicinal is None:
        return batch, None
    partner, lam = data.vicinal.sample(idx, g)
    obs_b, lengths_b = data.pool.sample(data.rows[partner], cfg.obs_len, g)
    mixed = vicinal_mod.mix(data.values[idx.to(device)], data.values[partner.to(device)], lam.to(device))
    with torch.no_grad():
        batch[2] = data.vae.encode(NodeTokens.from_packed(mixed, data.graph))[0].float()
    return batch, tuple(t.to(device) for t in (obs_b, lengths_b, data.params[partner.to(device)], lam))


def save_step(out: Path, cfg: TrainDiTConfig, info, model, ema, opt, g: torch.Generator, data: TrainingSet,
              step: int, losses: dict[str, float]) -> None:  # fmt: skip
    """Checkpoint ``step`` with every rank's generator state; the reference prompts (the shuffled-prompt
    control) are refreshed first with the weights being saved."""
    from dynadiff_fast.generative.checkpoint import save_checkpoint

    for m in (model, ema):
        m.reference_prompts.copy_(reference_prompts(m, data.pool, cfg.obs_len))
        m.reference_env.copy_(torch.tensor(data.envs))
    states = [g.get_state()]
    if info.distributed:
        import torch.distributed as tdist

        states = [None] * info.world_size
        tdist.all_gather_object(states, g.get_state())
    if info.is_main:
        save_checkpoint(out, model, step=step, ema=ema, optimizer=opt, state={"generators": states},
                        meta={"losses": losses, "config": config_mod.to_dict(cfg)})  # fmt: skip


def train_dit(cfg: TrainDiTConfig) -> Path:
    """Train (or resume) the DiT + prompter described by ``cfg``; returns the run folder."""
    from dynadiff_fast.data import EnvDataset
    from dynadiff_fast.experts.zoo import Zoo
    from dynadiff_fast.generative.checkpoint import load_checkpoint, unwrap, update_ema
    from dynadiff_fast.generative.vae import load_vae

    cfg = resolve(cfg)
    device, info = device_and_ranks(cfg.device, cfg.batch_size)
    out = Path(cfg.out)
    try:
        with io.output_lock(out, "dynadiff train dit", enabled=info.is_main):
            zoo = Zoo.open(cfg.zoo)
            vae, graph, normalizer, vae_meta = load_vae(cfg.vae, zoo)
            with EnvDataset.open(cfg.data) as ds:
                check_compatible(ds, zoo, vae_meta)
                data = training_set(cfg, zoo, ds, vae.to(device), graph, normalizer, device)
                if info.is_main:
                    out.mkdir(parents=True, exist_ok=True)
                    manifest = write_manifest(out, cfg, ds, zoo, vae.latent_shape, data.envs)
                    config_mod.save_resolved(cfg, out / "config.yaml", seed=cfg.seed)
                dist.barrier(info)
                if not info.is_main:
                    manifest = io.read_json(out / MANIFEST, "DynaDiff run manifest")
            del vae  # kept in ``data`` for vicinal rows only
            model, ema, opt = build_models(manifest, data, zoo, cfg, device)

            step, g = 0, torch.Generator().manual_seed(cfg.seed + 7919 * info.rank)
            meta = load_checkpoint(out, model, ema=ema, optimizer=opt, map_location=device)
            if meta is not None:
                step = int(meta["step"])
                g.set_state(meta["state"]["generators"][info.rank % len(meta["state"]["generators"])])
                if info.is_main:
                    truncate_log(out / LOG_FILE, step)
                log.info("resumed %s at step %d", out, step)
            ddp = model
            if info.distributed:
                from torch.nn.parallel import DistributedDataParallel

                ddp = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

            local_b = cfg.batch_size // info.world_size
            bar = step_bar(cfg.steps, step, "train dit", cfg.progress, info)
            acc, n_acc, t0 = {"diffusion": 0.0, "aux": 0.0}, 0, time.perf_counter()
            losses: dict[str, float] = {}
            model.train()
            while step < cfg.steps:
                with nvtx_range("dit/batch"):
                    batch, mix = sample_batch(data, model, cfg, local_b, g, device)
                for group in opt.param_groups:
                    group["lr"] = lr_at(step, cfg)
                with nvtx_range("dit/step"):
                    l_diff, l_aux = ddp(*batch, mix=mix)
                    loss = l_diff + cfg.aux_weight * l_aux
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    if cfg.grad_clip > 0:
                        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                    opt.step()
                    # EMA warm-up: early steps average over a short horizon so a short run's EMA is not stale.
                    update_ema(ema, unwrap(model), min(cfg.ema_decay, (1 + step) / (10 + step)))
                loss_value = float(loss.detach())
                if not math.isfinite(loss_value):
                    raise FloatingPointError(f"train dit: loss became {loss_value} at step {step}; lower --lr")
                step += 1
                acc["diffusion"] += float(l_diff.detach())
                acc["aux"] += float(l_aux.detach())
                n_acc += 1
                bar.update(1)
                if step % cfg.log_every == 0 or step == cfg.steps:
                    losses = {k: v / n_acc for k, v in acc.items()}
                    rate = n_acc / (time.perf_counter() - t0)
                    bar.set_postfix(diff=f"{losses['diffusion']:.4f}", aux=f"{losses['aux']:.4f}")
                    if info.is_main:
                        append_log(out / LOG_FILE, {"step": step, **losses, "steps_per_s": rate})
                    acc, n_acc, t0 = dict.fromkeys(acc, 0.0), 0, time.perf_counter()
                if step % cfg.checkpoint_every == 0 or step == cfg.steps:
                    save_step(out, cfg, info, model, ema, opt, g, data, step, losses)
            bar.close()
            if info.is_main:
                quality = latent_quality(ema, data.z, data.rows, seed=cfg.seed)
                io.write_json(out / "quality.json", {"step": step, **quality})
                log.info("train dit: %s finished at step %d (losses %s; latent quality %s)", out, step,
                         json.dumps(losses), json.dumps(quality["summary"]))  # fmt: skip
            dist.barrier(info)
    finally:
        dist.cleanup(info)
    return out


@torch.no_grad()
def latent_quality(model: DynaDiffModel, z: torch.Tensor, rows: torch.Tensor, n: int = 4, steps: int = 20,
                   seed: int = 0) -> dict[str, Any]:  # fmt: skip
    """How well the (EMA) model generates each training environment's latents from its reference prompt.

    Per environment: mean squared distance (standardised latent space) of ``n`` generated latents to the centroid
    of that environment's zoo latents, divided by the distance of the zoo-wide mean (the best unconditional
    guess) to that centroid. Below 1: the prompt steers generation towards the right environment."""
    model.eval()
    x = model.standardize_latent(z)
    ratios = []
    for r in range(model.reference_prompts.shape[0]):
        own = x[(rows == r).to(x.device)]
        if own.shape[0] == 0:
            continue
        centroid = own.mean(0)
        g = torch.Generator().manual_seed(seed + r)
        noise = torch.randn((n, *x.shape[1:]), generator=g).to(x.device)
        gen = model.standardize_latent(model.sample_latents(model.reference_prompts[r : r + 1].expand(n, -1), noise,
                                                            steps, generator=g))  # fmt: skip
        d_gen = float((gen - centroid).square().mean())
        d_mean = float((x.mean(0) - centroid).square().mean())
        ratios.append(d_gen / max(d_mean, 1e-12))
    t = torch.tensor(ratios)
    return {"per_env_ratio": ratios,
            "summary": {"ratio_mean": float(t.mean()), "ratio_max": float(t.max()), "envs_below_1": int((t < 1).sum()),
                        "n_envs": len(ratios)}}  # fmt: skip


def _run(cfg: TrainDiTConfig) -> int:
    train_dit(cfg)
    return 0


COMMAND = Command(config=TrainDiTConfig, run=_run)
