"""``dynadiff train vae``: train the weight VAE on a zoo (paper sec. 3.1.2, eq. 3 + eq. 4).

    dynadiff train vae --zoo ZOO_DIR --out RUN_DIR [--preset tiny|small|paper] [--func-weight 0]
    torchrun --nproc-per-node 2 -m dynadiff_fast.cli train vae --zoo ZOO_DIR --out RUN_DIR

1. Every zoo expert -> node tokens (``WeightGraph``); a ``WeightNormalizer`` is fitted on them and stored
   as ``RUN_DIR/normalizer.safetensors`` (the VAE only ever sees normalised tokens).
2. Functional-loss data: ``func_frames`` input frames per environment, drawn from the training
   trajectories of the zoo's dataset (``--data``, default the path the zoo records), and the original
   experts' outputs on them, f_w(x) (computed once).
3. AdamW with linear warm-up + cosine decay; loss ``recon + kl_weight * KL + func_weight(t) * L_func``, the
   functional weight ramped in linearly over ``func_ramp`` of the steps after ``func_start`` (early in
   training the decoded weights are far from any working expert and their outputs, hence L_func, are huge).
   EMA of the weights, gradient clipping, every term logged to ``RUN_DIR/log.jsonl`` and stored in the
   checkpoint metadata.
4. Checkpoints (``generative.checkpoint``) every ``checkpoint_every`` steps: a re-run resumes from the last
   one (a finished run returns at once). Under torchrun the batch is split over ranks (DDP; gloo on CPU,
   NCCL on GPU); rank 0 writes.
5. At the end (``quality``): the functional reconstruction of every zoo expert, the decoded expert's rollout
   RMSE on its environment's held-out test trajectories against the original's -> ``RUN_DIR/quality.json``.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from dynadiff_fast import config as config_mod
from dynadiff_fast import dist, io
from dynadiff_fast.generative import vicinal
from dynadiff_fast.generative.vae import (
    NORMALIZER_FILE,
    VAE_PRESETS,
    VAEConfig,
    WeightVAE,
    check_same_layout,
    expert_outputs,
    functional_loss,
    kl_divergence,
    layout_fingerprint,
    load_vae,
    reconstruction_loss,
    zoo_tokens,
)
from dynadiff_fast.profiling import nvtx_range
from dynadiff_fast.stages.common import LOG_FILE, Command, device_and_ranks, step_bar, truncate_log

log = logging.getLogger(__name__)

__all__ = ["TrainVAEConfig", "train_vae", "load_vae", "functional_quality", "COMMAND"]


@dataclass(frozen=True)
class TrainVAEConfig:
    zoo: str = field(default="", metadata={"help": "zoo folder (`dynadiff zoo build`)"})
    out: str = field(default="", metadata={"help": "run folder (created; an existing run is resumed)"})
    data: str = field(default="", metadata={"help": "dataset .h5 for the functional loss (default: the zoo's)"})
    preset: str = field(default="tiny", metadata={"help": "tiny | bench | small | paper (model size and schedule)"})
    seed: int = field(default=0, metadata={"help": "seed of initialisation, batches, frames and latent noise"})
    device: str | None = field(default=None, metadata={"help": "cpu | cuda (default: cuda when available)"})
    progress: bool = field(
        default=True, metadata={"help": "progress: a tqdm bar on a terminal, else a log line every 30 s (rank 0)"}
    )
    model: dict[str, Any] = field(default_factory=dict, metadata={"help": "VAEConfig field overrides"})
    steps: int | None = field(default=None, metadata={"help": "optimizer steps (default: preset)"})
    batch_size: int | None = field(default=None, metadata={"help": "experts per step, all ranks (default: preset)"})
    lr: float | None = field(default=None, metadata={"help": "peak AdamW learning rate (default: preset)"})
    warmup_steps: int | None = field(default=None, metadata={"help": "linear warm-up steps (default: preset)"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay"})
    kl_weight: float = field(default=1e-5, metadata={"help": "beta: weight of the KL term"})
    func_weight: float = field(default=1.0, metadata={"help": "lambda: weight of the functional loss (0: MSE-only)"})
    func_start: float = field(default=0.1, metadata={"help": "fraction of steps before the functional loss starts"})
    func_ramp: float = field(default=0.2, metadata={"help": "fraction of steps over which lambda ramps to its value"})
    func_frames: int = field(default=16, metadata={"help": "input frames kept per environment for L_func"})
    func_batch: int = field(default=4, metadata={"help": "frames per expert per step for L_func"})
    ema_decay: float | None = field(default=None, metadata={"help": "EMA decay per step (default: preset)"})
    grad_clip: float = field(default=1.0, metadata={"help": "max gradient norm (0: off)"})
    checkpoint_every: int | None = field(default=None, metadata={"help": "steps between checkpoints (default: preset)"})
    log_every: int = field(default=10, metadata={"help": "steps between log.jsonl lines"})
    normalizer: str = field(default="element", metadata={"help": "WeightNormalizer granularity: element | pair"})
    quality: bool = field(default=True, metadata={"help": "measure functional reconstruction at the end"})
    quality_steps: int | None = field(default=None, metadata={"help": "rollout steps of the quality check"})
    mix_prob: float | None = field(
        default=None,
        metadata={"help": "experts mixed with a neighbouring environment's (generative.vicinal; default: preset)"},
    )
    mix_span: float | None = field(
        default=None, metadata={"help": "mixing weights drawn in [-span, 1 + span] (default: preset)"}
    )


@dataclass(frozen=True)
class VAETrainPreset:
    """The schedule of a preset (``None`` fields of ``TrainVAEConfig`` are taken from here); mixing
    (``generative.vicinal``) is off unless a preset turns it on (the paper trains without it)."""

    steps: int
    batch_size: int
    lr: float
    warmup_steps: int
    ema_decay: float
    checkpoint_every: int  # a few checkpoints inside every preset's run, so a kill loses a fraction of the stage
    mix_prob: float = 0.0
    mix_span: float = 0.0


TRAIN_PRESETS: dict[str, VAETrainPreset] = {
    "tiny": VAETrainPreset(steps=200, batch_size=8, lr=1e-3, warmup_steps=10, ema_decay=0.98, checkpoint_every=50),
    # bench: 1000 steps (200 left decoded experts +45% rollout RMSE over the originals; 1000: all within 5%), and
    # half the experts mixed with a neighbouring environment's (generative.vicinal), so the latent space covers
    # the path between and past the seen environments that the DiT's mixed rows use (with the DiT's mixing,
    # seed 0: unseen_out RMSE 0.224 -> 0.207, the best of the candidates 0.218 -> 0.186; seen 0.202 -> 0.200;
    # unseen_in unchanged, 0.218).
    "bench": VAETrainPreset(steps=1000, batch_size=8, lr=1e-3, warmup_steps=10, ema_decay=0.98,
                            checkpoint_every=200, mix_prob=0.5, mix_span=0.5),
    "small": VAETrainPreset(steps=20000, batch_size=16, lr=3e-4, warmup_steps=500, ema_decay=0.999,
                            checkpoint_every=2000),
    "paper": VAETrainPreset(steps=100000, batch_size=32, lr=1e-4, warmup_steps=1000, ema_decay=0.9999,
                            checkpoint_every=5000),
}  # fmt: skip


def resolve(cfg: TrainVAEConfig) -> TrainVAEConfig:
    """Fill the preset's values into the fields left at None and validate."""
    cfg = config_mod.fill_unset(cfg, config_mod.preset_of(TRAIN_PRESETS, cfg.preset))
    for name in ("zoo", "out"):
        if not getattr(cfg, name):
            raise ValueError(f"{name}: required (pass --{name})")
    for name in ("steps", "batch_size", "func_frames", "func_batch", "checkpoint_every", "log_every"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"{name}: expected >= 1, got {getattr(cfg, name)}")
    if cfg.func_batch > cfg.func_frames:
        raise ValueError(f"func_batch: {cfg.func_batch} exceeds func_frames={cfg.func_frames}")
    if not 0.0 <= cfg.ema_decay < 1.0:
        raise ValueError(f"ema_decay: expected a value in [0, 1), got {cfg.ema_decay}")
    if cfg.kl_weight < 0 or cfg.func_weight < 0:
        raise ValueError(f"kl_weight / func_weight: expected >= 0, got {cfg.kl_weight} / {cfg.func_weight}")
    vicinal.check(cfg.mix_prob, cfg.mix_span)
    vae_config(cfg)  # unknown model keys fail here, before any work
    return cfg


def vae_config(cfg: TrainVAEConfig) -> VAEConfig:
    return config_mod.preset_of(VAE_PRESETS, cfg.preset, cfg.model, "model")


# -------------------------------------------------------------------------------------------------
# Schedules
# -------------------------------------------------------------------------------------------------


def learning_rate(cfg: TrainVAEConfig, step: int) -> float:
    """Linear warm-up to ``lr``, then cosine decay to lr / 10 at ``steps``."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    t = (step - cfg.warmup_steps) / max(cfg.steps - cfg.warmup_steps, 1)
    return cfg.lr * (0.1 + 0.45 * (1.0 + math.cos(math.pi * min(t, 1.0))))


def func_weight_at(cfg: TrainVAEConfig, step: int) -> float:
    """lambda(step): 0 before ``func_start * steps``, then a linear ramp to ``func_weight``."""
    start, ramp = cfg.func_start * cfg.steps, max(cfg.func_ramp * cfg.steps, 1.0)
    return cfg.func_weight * min(max((step - start) / ramp, 0.0), 1.0)


# -------------------------------------------------------------------------------------------------
# Data
# -------------------------------------------------------------------------------------------------


def sample_frames(ds, envs: list[int], k: int, generator: torch.Generator) -> torch.Tensor:
    """k standardised frames per environment, each from a random training trajectory and time:
    ``[len(envs), k, *frame_shape]``."""
    out = []
    for env in envs:
        trajs = torch.randint(ds.n_train_traj, (k,), generator=generator).tolist()
        frames = torch.randint(ds.n_frames, (k,), generator=generator).tolist()
        out.append(torch.cat([ds.load(env, t, f)[0, 0] for t, f in zip(trajs, frames)]))
    return torch.stack(out)


@torch.no_grad()
def functional_data(
    zoo, ds, k: int, seed: int, device: torch.device, chunk: int = 16
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(frames [n_env, k, *frame], expert -> frame row [N_zoo], targets f_w(x) [N_zoo, k, *out]) on ``device``."""
    envs = sorted(set(zoo.env_index.tolist()))
    frames = sample_frames(ds, envs, k, torch.Generator().manual_seed(seed)).to(device)
    row = torch.tensor([envs.index(int(e)) for e in zoo.env_index], device=device)
    targets = []
    for i in range(0, len(zoo), chunk):
        idx = list(range(i, min(i + chunk, len(zoo))))
        stacked = {key: v.to(device) for key, v in zoo.batched(idx).stacked().items()}
        targets.append(expert_outputs(zoo.config, stacked, frames[row[idx]]))
    return frames, row, torch.cat(targets)


def _open_dataset(cfg: TrainVAEConfig, zoo):
    from dynadiff_fast.data import EnvDataset

    path = cfg.data or zoo.dataset_info.get("path", "")
    if not path:
        raise ValueError("data: the zoo records no dataset path; pass --data FILE.h5")
    if not Path(path).exists():
        raise FileNotFoundError(f"data: {path} does not exist (the zoo's dataset moved? pass --data FILE.h5)")
    ds = EnvDataset.open(path)
    try:
        zoo.check_dataset(ds)
    except ValueError:
        ds.close()
        raise
    return ds


# -------------------------------------------------------------------------------------------------
# Quality: functional reconstruction
# -------------------------------------------------------------------------------------------------


@torch.no_grad()
def reconstruct(vae: WeightVAE, normalizer, tokens, chunk: int = 16):
    """Decoded experts' tokens (denormalised, on the VAE's device) through the encoder means, ``chunk`` experts
    at a time."""
    from dynadiff_fast.weightspace.graph import NodeTokens

    device = next(vae.parameters()).device
    out = []
    for i in range(0, tokens.num_experts, chunk):
        part = normalizer.normalize(tokens.select(slice(i, i + chunk))).to(device)
        mu, _ = vae.encode(part)
        out.append(normalizer.denormalize(vae.decode(mu)))
    return NodeTokens.cat(out)


@torch.no_grad()
def functional_quality(vae, normalizer, graph, zoo, ds, rollout_steps: int | None = None, tokens=None) -> dict:
    """Rollout RMSE of every zoo expert and of its VAE reconstruction (encoder mean -> decoder) on the held-out
    test trajectories of its environment, ``rollout_steps`` steps (default: all frames).

    Returns per-expert lists (``rmse_original``, ``rmse_decoded``, ``relative_increase`` = decoded / original
    - 1) and a summary: zoo-averaged RMSEs and their ratio, quantiles of the relative increase and the
    fraction of experts within 5%.
    """
    from dynadiff_fast.experts.evaluate import evaluate_experts
    from dynadiff_fast.experts.stacked import experts_type

    steps = rollout_steps or ds.n_frames - 1
    tokens = zoo_tokens(zoo, graph) if tokens is None else tokens
    envs = zoo.env_index.tolist()
    decoded = reconstruct(vae, normalizer, tokens)  # on the VAE's device, where the rollouts run too
    batched = experts_type(zoo.config)
    original = batched.from_stacked(zoo.config, graph.decode_stacked(tokens.to(decoded.device)))
    rebuilt = batched.from_stacked(zoo.config, graph.decode_stacked(decoded))
    with nvtx_range("vae/quality"):
        rmse_o = evaluate_experts(original, (ds, envs), steps, progress=False).mean(-1).double()
        rmse_d = evaluate_experts(rebuilt, (ds, envs), steps, progress=False).mean(-1).double()
    rel = rmse_d / rmse_o - 1.0
    q = torch.quantile(rel, torch.tensor([0.1, 0.5, 0.9], dtype=rel.dtype)).tolist()
    return {
        "rollout_steps": steps,
        "summary": {
            "rmse_original_mean": float(rmse_o.mean()),
            "rmse_decoded_mean": float(rmse_d.mean()),
            "relative_increase_of_mean": float(rmse_d.mean() / rmse_o.mean() - 1.0),
            "relative_increase_mean": float(rel.mean()),
            "relative_increase_p10_p50_p90": q,
            "relative_increase_max": float(rel.max()),
            "fraction_within_5pct": float((rel <= 0.05).double().mean()),
        },
        "rmse_original": rmse_o.tolist(),
        "rmse_decoded": rmse_d.tolist(),
        "relative_increase": rel.tolist(),
    }


# -------------------------------------------------------------------------------------------------
# Training
# -------------------------------------------------------------------------------------------------


def _metadata(cfg, vcfg, graph, zoo, normalizer_sha: str, losses: dict, step: int) -> dict[str, Any]:

    return {
        "kind": "weight-vae",
        "vae_config": dataclasses.asdict(vcfg),
        "graph": graph.to_dict(),
        "layout_fingerprint": layout_fingerprint(graph),
        "expert_config": zoo.config.to_dict(),
        "system_name": zoo.system_name,
        "zoo": str(Path(cfg.zoo).resolve()),
        "normalizer_sha256": normalizer_sha,
        "train_config": config_mod.to_dict(cfg),
        "losses": losses,
        "complete": step >= cfg.steps,
    }


def _normalizer(cfg: TrainVAEConfig, tokens, previous: dict | None, info: dist.DistInfo):
    """(WeightNormalizer, sha256 of its file): fitted on the zoo and written for a fresh run, the stored one
    (exactly what the checkpoint was trained with) for a resumed run."""
    from dynadiff_fast.weightspace.normalization import WeightNormalizer

    out = Path(cfg.out)
    path = out / NORMALIZER_FILE
    if previous is not None:
        state = io.load_safetensors(path, previous["normalizer_sha256"], "VAE weight normaliser")
        return WeightNormalizer.from_state_dict(state), previous["normalizer_sha256"]
    normalizer = WeightNormalizer.fit(tokens, granularity=cfg.normalizer)
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        io.save_safetensors(path, normalizer.state_dict())
        config_mod.save_resolved(cfg, out / "config.yaml", seed=cfg.seed)
    dist.barrier(info)
    return normalizer, io.sha256_file(path)


class _Meter:
    """Running sums of the loss terms between two log lines, averaged over steps and ranks."""

    def __init__(self):
        self.sums: dict[str, tuple[float, int]] = {}

    def add(self, **terms: torch.Tensor | None) -> None:
        for k, v in terms.items():
            if v is not None:
                total, n = self.sums.get(k, (0.0, 0))
                self.sums[k] = (total + float(v.detach()), n + 1)

    def mean(self, info: dist.DistInfo) -> dict[str, float | None]:
        keys = ("loss", "recon", "kl", "func")
        t = torch.tensor([self.sums.get(k, (0.0, 0))[i] for k in keys for i in (0, 1)], dtype=torch.float64)
        if info.distributed:  # NCCL reduces GPU tensors, gloo CPU ones
            import torch.distributed as tdist

            t = t.to("cuda" if tdist.get_backend() == "nccl" else "cpu")
            tdist.all_reduce(t)
        t = t.cpu().view(len(keys), 2)
        self.sums = {}
        return {k: (float(t[i, 0] / t[i, 1]) if t[i, 1] else None) for i, k in enumerate(keys)}


def train_vae(cfg: TrainVAEConfig) -> Path:
    """Train (or resume, or find finished) the VAE run ``cfg.out``; returns the run folder."""
    from dynadiff_fast.experts.zoo import Zoo
    from dynadiff_fast.generative.checkpoint import read_meta
    from dynadiff_fast.weightspace.graph import WeightGraph

    cfg = resolve(cfg)
    device, info = device_and_ranks(cfg.device, cfg.batch_size)
    out = Path(cfg.out)
    try:
        with io.output_lock(out, "dynadiff train vae", enabled=info.is_main):
            zoo = Zoo.open(cfg.zoo)
            ds = _open_dataset(cfg, zoo)  # a foreign dataset is refused before anything is written
            try:
                graph = WeightGraph.from_config(zoo.config)
                previous = read_meta(out)
                if previous is not None:
                    check_same_layout(WeightGraph.from_dict(previous["graph"]), graph, f"zoo {cfg.zoo} vs run {out}")
                    if previous.get("vae_config") != dataclasses.asdict(vae_config(cfg)):
                        raise ValueError(f"out: {out} holds a VAE with config {previous.get('vae_config')}, this run "
                                         f"asks for {dataclasses.asdict(vae_config(cfg))}; choose another --out")  # fmt: skip
                    # finished, unless the run stopped between its last checkpoint and the quality report
                    if previous["step"] >= cfg.steps and not (cfg.quality and not (out / "quality.json").exists()):
                        log.info("%s is complete (step %d); nothing to train", out, previous["step"])
                        return out
                tokens = zoo_tokens(zoo, graph)
                normalizer, norm_sha = _normalizer(cfg, tokens, previous, info)
                ema = _train(cfg, zoo, graph, tokens, normalizer, norm_sha, ds, device, info)
                if cfg.quality and info.is_main:
                    quality = functional_quality(ema.eval(), normalizer, graph, zoo, ds, cfg.quality_steps, tokens)
                    io.write_json(out / "quality.json", quality)
                    log.info("functional reconstruction: %s", quality["summary"])
            finally:
                ds.close()
            dist.barrier(info)
            return out
    finally:
        dist.cleanup(info)


def _train(cfg, zoo, graph, tokens, normalizer, norm_sha: str, ds, device, info) -> WeightVAE:
    """The optimisation loop (resuming from the run's last checkpoint); returns the EMA model."""
    from dynadiff_fast.generative.checkpoint import load_checkpoint, save_checkpoint, update_ema
    from dynadiff_fast.weightspace.graph import NodeTokens

    out = Path(cfg.out)
    values = torch.cat([t.reshape(t.shape[0], -1) for t in normalizer.normalize(tokens).groups], 1).to(device)
    normalizer = normalizer.to(device)  # denormalize() runs every step
    frames, frame_row, targets = functional_data(zoo, ds, cfg.func_frames, cfg.seed, device)
    vicinity = vicinal.zoo_vicinity(zoo, cfg.mix_prob, cfg.mix_span)

    torch.manual_seed(cfg.seed)  # identical initialisation on every rank
    model = WeightVAE(vae_config(cfg), graph).to(device)
    ema = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    g_batch = torch.Generator().manual_seed(cfg.seed + 1)
    g_noise = torch.Generator(device=device).manual_seed(cfg.seed + 2 + info.rank)
    meta = load_checkpoint(out, model, ema=ema, optimizer=opt, map_location=device)
    step, losses = 0, {}
    if meta is not None:
        step, losses = meta["step"], meta["losses"]
        noise_states = meta["state"]["g_noise"]  # one per rank of the run that saved it
        g_batch.set_state(meta["state"]["g_batch"].cpu())
        g_noise.set_state(noise_states[info.rank % len(noise_states)].cpu())
        log.info("resumed %s at step %d", out, step)
    if info.is_main:
        truncate_log(out / LOG_FILE, step)
    net = model
    if info.distributed:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    def save(step: int) -> None:
        states = [g_noise.get_state()]
        if info.distributed:  # every rank's latent-noise stream, so a resume continues each exactly
            import torch.distributed as tdist

            states = [None] * info.world_size
            tdist.all_gather_object(states, g_noise.get_state())
        if info.is_main:
            meta = _metadata(cfg, vae_config(cfg), graph, zoo, norm_sha, losses, step)
            state = {"g_batch": g_batch.get_state(), "g_noise": [s.cpu() for s in states]}
            save_checkpoint(out, model, step=step, ema=ema, optimizer=opt, meta=meta, state=state)
        dist.barrier(info)

    bar = step_bar(cfg.steps, step, "train vae", cfg.progress, info)
    meter, t0, local = _Meter(), time.time(), cfg.batch_size // info.world_size
    while step < cfg.steps:
        idx = torch.randperm(len(zoo), generator=g_batch)[: cfg.batch_size]
        idx = idx.repeat(math.ceil(cfg.batch_size / len(idx)))[: cfg.batch_size]  # a zoo smaller than a batch
        idx = idx[info.rank * local : (info.rank + 1) * local].to(device)
        pick = torch.rand(local, cfg.func_frames, generator=g_batch).argsort(1)[:, : cfg.func_batch].to(device)
        lam, log_step = func_weight_at(cfg, step), (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps
        for group in opt.param_groups:
            group["lr"] = learning_rate(cfg, step)
        lam_mix = None
        if vicinity is not None:  # mixed experts on the path between neighbouring environments
            partner, lam_mix = vicinity.sample(idx.cpu(), g_batch)
        with nvtx_range("vae/step"):
            rows = values[idx] if lam_mix is None else vicinal.mix(values[idx], values[partner.to(device)], lam_mix)
            batch = NodeTokens.from_packed(rows, graph)
            recon, mu, logvar = net(batch, generator=g_noise)
            recon_loss, kl = reconstruction_loss(recon, batch), kl_divergence(mu, logvar)
            loss, func = recon_loss + cfg.kl_weight * kl, None
            if lam > 0 or log_step:  # with lambda = 0 the functional loss is only measured, on log steps
                x, y = frames[frame_row[idx][:, None], pick], targets[idx[:, None], pick]  # [b, func_batch, ...]
                if lam_mix is not None:  # the target is what the (mixed) input expert itself outputs
                    with torch.no_grad():
                        y = expert_outputs(zoo.config, graph.decode_stacked(normalizer.denormalize(batch)), x)
                with torch.set_grad_enabled(lam > 0):
                    func = functional_loss(normalizer.denormalize(recon), zoo.config, x, y)
                loss = loss + lam * func if lam > 0 else loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            update_ema(ema, model, cfg.ema_decay)
        step += 1
        meter.add(loss=loss, recon=recon_loss, kl=kl, func=func)
        bar.update(1)
        if log_step:
            losses = {**meter.mean(info), "func_weight": lam, "lr": learning_rate(cfg, step - 1), "step": step}
            bar.set_postfix(recon=f"{losses['recon']:.3g}", func=f"{losses['func'] or 0:.3g}", refresh=False)
            if info.is_main:
                with open(out / "log.jsonl", "a") as f:
                    f.write(json.dumps({**losses, "seconds": round(time.time() - t0, 2)}) + "\n")
        if step % cfg.checkpoint_every == 0 or step == cfg.steps:
            save(step)
    bar.close()
    return ema


def _run(cfg: TrainVAEConfig) -> int:
    train_vae(cfg)
    return 0


COMMAND = Command(config=TrainVAEConfig, run=_run)
