"""Training checkpoints shared by the VAE and DiT trainers: save, resume, load for inference.

One checkpoint is one folder ``RUN_DIR/checkpoints/step_<step:08d>/`` holding

    model.safetensors   the trained weights (``model.state_dict()``)
    ema.safetensors     the exponential-moving-average weights (when an EMA copy is kept)
    optimizer.pt        optimizer state + any trainer state (RNG, scheduler), ``torch.save`` format
    meta.json           {"format", "step", "versions", "files": {name: sha256}, **caller meta}

The folder is written under a hidden temporary name and renamed when every file is complete, so a
killed run never leaves a half checkpoint under a real name: resume takes the highest complete step.
Checksums in ``meta.json`` catch files corrupted later: without an explicit step, a damaged newest
checkpoint (unreadable metadata, a missing file, a checksum mismatch) is skipped with a warning and the
newest intact older one is used. Weights and metadata are plain safetensors + JSON (readable without
this package); optimizer state stays in its own file so inference never reads it.

    save_checkpoint(run_dir, model, step=s, ema=ema, optimizer=opt, meta={"config": ..., "losses": ...})
    meta = load_checkpoint(run_dir, model, ema=ema, optimizer=opt)   # resume (None when no checkpoint)
    meta = load_checkpoint(run_dir, ema=model)                        # inference: EMA weights into model
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dynadiff_fast import io
from dynadiff_fast.config import versions

log = logging.getLogger("dynadiff.checkpoint")

FORMAT = "dynadiff-checkpoint/1"
RESERVED = ("format", "step", "versions", "files")
_STEP_DIR = re.compile(r"^step_(\d{8})$")


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module under DistributedDataParallel (``.module``) and ``torch.compile`` (``._orig_mod``)."""
    from torch.nn.parallel import DistributedDataParallel

    while True:
        if isinstance(model, DistributedDataParallel):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):
            model = model._orig_mod
        else:
            return model


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """``ema <- decay * ema + (1 - decay) * model`` over parameters; buffers are copied (DiT convention)."""
    if not 0.0 <= decay <= 1.0:
        raise ValueError(f"decay: expected a value in [0, 1], got {decay}")
    model = unwrap(model)
    ema_params = dict(ema.named_parameters())
    for name, p in model.named_parameters():
        ema_params[name].lerp_(p.detach(), 1.0 - decay)
    ema_buffers = dict(ema.named_buffers())
    for name, b in model.named_buffers():
        ema_buffers[name].copy_(b)


def checkpoint_dirs(run_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoint folders of ``run_dir``, oldest step first."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and _STEP_DIR.match(p.name)]
    return sorted(found, key=lambda p: int(_STEP_DIR.match(p.name).group(1)))


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """The folder of the highest saved step, or None when ``run_dir`` holds no checkpoint."""
    dirs = checkpoint_dirs(run_dir)
    return dirs[-1] if dirs else None


def _state_tensors(module: nn.Module) -> dict[str, torch.Tensor]:
    # Clone: safetensors refuses tensors that share storage (tied weights, views of one buffer).
    return {k: v.detach().cpu().clone().contiguous() for k, v in unwrap(module).state_dict().items()}


def save_checkpoint(
    run_dir: str | os.PathLike,
    model: nn.Module,
    *,
    step: int,
    ema: nn.Module | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    meta: dict[str, Any] | None = None,
    state: dict[str, Any] | None = None,
    keep: int = 2,
) -> Path:
    """Write checkpoint ``step`` of ``run_dir`` atomically and keep only the newest ``keep`` of them.

    Args:
        model: the trained module (DDP / compiled wrappers are unwrapped).
        step: optimizer steps done so far (>= 0); names the folder.
        ema: EMA copy of ``model`` (same state-dict keys), or None.
        optimizer: its ``state_dict()`` goes to ``optimizer.pt``.
        meta: JSON-serialisable metadata (config, losses, layout fingerprint, ...); keys must not be
            one of ``format, step, versions, files``.
        state: extra trainer state saved beside the optimizer (tensors, numbers, dicts: anything
            ``torch.load(weights_only=True)`` reads back), e.g. generator states.
        keep: how many newest checkpoints to keep (>= 1).
    Returns:
        The checkpoint folder.
    """
    if not isinstance(step, int) or step < 0:
        raise ValueError(f"step: expected an int >= 0, got {step!r}")
    if keep < 1:
        raise ValueError(f"keep: expected >= 1, got {keep}")
    meta = dict(meta or {})
    clash = [k for k in RESERVED if k in meta]
    if clash:
        raise ValueError(f"meta: keys {clash} are reserved (reserved: {list(RESERVED)})")
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step:08d}"
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=root))
    try:
        files = {"model.safetensors": io.save_safetensors(tmp / "model.safetensors", _state_tensors(model))}
        if ema is not None:
            files["ema.safetensors"] = io.save_safetensors(tmp / "ema.safetensors", _state_tensors(ema))
        if optimizer is not None or state is not None:
            blob = {"optimizer": optimizer.state_dict() if optimizer is not None else None, "state": state}
            torch.save(blob, tmp / "optimizer.pt")
            files["optimizer.pt"] = io.sha256_file(tmp / "optimizer.pt")
        doc = {"format": FORMAT, "step": step, "versions": versions(), "files": files, **meta}
        io.write_json(tmp / "meta.json", doc)
        tmp.chmod(io.ordinary_mode(folder=True))  # mkdtemp creates 0700
        if final.exists():  # re-saving a step (e.g. the final save after a resume at that step)
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    for old in checkpoint_dirs(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _damage(path: Path) -> str | None:
    """Why checkpoint folder ``path`` cannot be trusted (unreadable ``meta.json``, a listed file missing or not
    matching its checksum), or None when it is intact. A foreign format is not damage: ``read_meta`` names it."""
    meta = path / "meta.json"
    try:
        doc = io.read_json(meta, "checkpoint metadata")
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            return None
        if not isinstance(doc.get("files"), dict):
            return f"{meta} lists no files"
        for name, sha in doc["files"].items():
            io.verify_checksum(io.inside(path, name, meta, "files entry"), sha, name)
    except (OSError, ValueError) as err:
        return str(err)
    return None


def newest_intact(run_dir: str | os.PathLike) -> Path | None:
    """The newest checkpoint folder of ``run_dir`` that is intact, skipping (with a warning) damaged newer ones: a
    bad disk or a tampered file costs the steps since the previous checkpoint, not the run. None when there is no
    checkpoint; ``ValueError`` when every one is damaged."""
    dirs = checkpoint_dirs(run_dir)
    damaged = []
    for path in reversed(dirs):
        reason = _damage(path)
        if reason is None:
            return path
        log.warning("checkpoint %s is damaged (%s); falling back to the previous one", path, reason)
        damaged.append(f"{path.name}: {reason}")
    if damaged:
        raise ValueError(f"checkpoint: no intact checkpoint in {Path(run_dir) / 'checkpoints'} ({'; '.join(damaged)})")
    return None


def _resolve(run_dir: str | os.PathLike, step: int | None) -> Path | None:
    if step is None:
        return newest_intact(run_dir)
    path = Path(run_dir) / "checkpoints" / f"step_{step:08d}"
    if not path.is_dir():
        have = [int(_STEP_DIR.match(p.name).group(1)) for p in checkpoint_dirs(run_dir)]
        raise FileNotFoundError(f"step: no checkpoint for step {step} in {run_dir} (have steps: {have})")
    return path


def read_meta(run_dir: str | os.PathLike, step: int | None = None) -> dict[str, Any] | None:
    """The ``meta.json`` of checkpoint ``step`` (default: the newest intact one), or None when there is none."""
    path = _resolve(run_dir, step)
    if path is None:
        return None
    doc = io.read_json(path / "meta.json", "checkpoint metadata")
    if doc.get("format") != FORMAT:
        raise ValueError(f"checkpoint {path}: format {doc.get('format')!r} is not {FORMAT!r}")
    return doc


def _load_module(module: nn.Module, path: Path, sha: str | None, what: str) -> None:
    if sha is None:
        raise FileNotFoundError(f"{what}: checkpoint {path.parent} has no {path.name}")
    tensors = io.load_safetensors(path, sha, what)
    target = unwrap(module)
    own = target.state_dict()
    missing = sorted(set(own) - set(tensors))
    unexpected = sorted(set(tensors) - set(own))
    shapes = [f"{k}: checkpoint {tuple(tensors[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in tensors and tensors[k].shape != own[k].shape]  # fmt: skip
    if missing or unexpected or shapes:
        raise ValueError(
            f"{what}: {path} does not match the model (built from a different config?): "
            f"missing keys {missing[:5]}, unexpected keys {unexpected[:5]}, shape mismatches {shapes[:5]}"
        )
    target.load_state_dict(tensors)


def load_checkpoint(
    run_dir: str | os.PathLike,
    model: nn.Module | None = None,
    *,
    ema: nn.Module | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    step: int | None = None,
    map_location: str | torch.device = "cpu",
) -> dict[str, Any] | None:
    """Load checkpoint ``step`` (default: the newest intact one) of ``run_dir`` into whichever of
    model/ema/optimizer are given; returns its metadata (plus ``"state"``: the trainer state, when an
    optimizer file exists), or None when ``run_dir`` holds no checkpoint yet (a fresh run). To load the
    EMA weights for inference, pass the inference model as ``ema``."""
    path = _resolve(run_dir, step)
    if path is None:
        return None
    doc = read_meta(run_dir, int(_STEP_DIR.match(path.name).group(1)))
    files = doc["files"]
    if model is not None:
        _load_module(model, path / "model.safetensors", files.get("model.safetensors"), "model weights")
    if ema is not None:
        _load_module(ema, path / "ema.safetensors", files.get("ema.safetensors"), "EMA weights")
    if "optimizer.pt" in files:
        io.verify_checksum(path / "optimizer.pt", files["optimizer.pt"], "optimizer state")
        blob = torch.load(path / "optimizer.pt", map_location=map_location, weights_only=True)
        if optimizer is not None:
            if blob["optimizer"] is None:
                raise FileNotFoundError(f"optimizer: checkpoint {path} saved no optimizer state")
            optimizer.load_state_dict(blob["optimizer"])
        doc["state"] = blob["state"]
    elif optimizer is not None:
        raise FileNotFoundError(f"optimizer: checkpoint {path} has no optimizer.pt")
    return doc
