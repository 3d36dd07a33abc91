"""HDF5 environment datasets: resumable writer and lazy reader.

File layout (one file per system and preset)::

    /trajectories   float32 [n_env, n_traj, n_frames + 1, C, H, W]   (ODE systems: [..., 2])
    /params         float64 [n_env, P]
    /env_done       bool    [n_env]          environments fully written (resume marker)
    /split/{seen,unseen_in,unseen_out}  int64 environment indices
    /stats/{mean,std}  float32 [C]           per channel, over the seen environments' training trajectories
    attrs: format, system, param_names, channel_names, dt_frame, domain, grid, solver (JSON settings),
           n_train_traj, seed, config (JSON resolved config), versions (JSON), complete

Trajectories ``[0, n_train_traj)`` of each environment are for training, the rest for testing. Writing goes
to ``<out>.partial`` one batch of environments at a time and is renamed to ``<out>`` only once complete, so
an interrupted run never leaves a half-written file under the final name and a re-run resumes.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dynadiff_fast import io

log = logging.getLogger("dynadiff.dataset")

FORMAT = "dynadiff-envdataset-1"
SPLITS = ("seen", "unseen_in", "unseen_out")


def _h5py():
    import h5py

    return h5py


# ------------------------------------------------------------------------------------------------
# writing
# ------------------------------------------------------------------------------------------------
def reuse_finished(out: Path, config: dict) -> bool:
    """True when ``out`` is a finished dataset made with ``config`` (nothing to do); False when it does not
    exist; a one-line ``ValueError`` when it was made with another config (never overwritten or mixed)."""
    if not out.exists():
        return False
    with EnvDataset(out) as existing:
        if existing.config != config:
            raise ValueError(f"out: {out} exists and was made with another config; delete it or choose another --out")
    return True


def resume_state(partial: Path, config: dict, done_key: str, n: int, what: str) -> np.ndarray | None:
    """The ``done_key`` flags ``[n]`` of a compatible unfinished file (same config, same count), or None when
    starting fresh: an incompatible or unreadable leftover is discarded, never mixed in. ``what`` names the
    units in the log line (e.g. "environments")."""
    if not partial.exists():
        return None
    import h5py

    try:
        with h5py.File(partial, "r") as f:
            same = json.loads(f.attrs["config"]) == config and f[done_key].shape == (n,)
            done = f[done_key][...] if same else None
    except (OSError, KeyError):
        done = None
    if done is None:
        log.warning("discarding incompatible or unreadable %s", partial)
        partial.unlink()
    else:
        log.info("resuming %s: %d/%d %s already written", partial, int(done.sum()), n, what)
    return done


def create_partial(
    path: Path,
    *,
    system,
    params: torch.Tensor,
    split: dict[str, torch.Tensor],
    n_traj: int,
    n_train_traj: int,
    n_frames: int,
    frame_shape: tuple[int, ...],
    seed: int,
    config: dict[str, Any],
    versions: dict[str, str],
) -> None:
    """Create the ``.partial`` file with every dataset allocated and nothing written yet."""
    h5py = _h5py()
    with h5py.File(path, "w") as f:
        f.attrs["format"] = FORMAT
        f.attrs["system"] = system.name
        f.attrs["param_names"] = json.dumps(list(system.param_names))
        f.attrs["channel_names"] = json.dumps(list(system.channel_names))
        f.attrs["dt_frame"] = float(system.dt_frame)
        f.attrs["domain"] = json.dumps([list(d) for d in system.domain])
        f.attrs["grid"] = json.dumps(list(system.grid))
        f.attrs["solver"] = json.dumps(system.settings(), default=str)
        f.attrs["n_train_traj"] = int(n_train_traj)
        f.attrs["seed"] = int(seed)
        f.attrs["config"] = json.dumps(config)
        f.attrs["versions"] = json.dumps(versions)
        f.attrs["complete"] = False
        shape = (params.shape[0], n_traj, n_frames + 1, *frame_shape)
        # One chunk per trajectory: reading one trajectory (or a frame window of it) touches one chunk.
        f.create_dataset("trajectories", shape=shape, dtype="f4", chunks=(1, 1, *shape[2:]))
        f.create_dataset("params", data=params.numpy())
        f.create_dataset("env_done", data=np.zeros(params.shape[0], dtype=bool))
        g = f.create_group("split")
        for k in SPLITS:
            g.create_dataset(k, data=split[k].numpy().astype(np.int64))


def write_environments(path: Path, envs: Sequence[int], traj: torch.Tensor) -> None:
    """Write ``traj`` [len(envs), n_traj, n_frames+1, ...] for ``envs`` and mark them done (flushed)."""
    h5py = _h5py()
    with h5py.File(path, "r+") as f:
        data = traj.detach().to(torch.float32).cpu().numpy()
        for i, e in enumerate(envs):
            f["trajectories"][e] = data[i]
        f.flush()
        done = f["env_done"][...]
        done[list(envs)] = True
        f["env_done"][...] = done
        f.flush()


def finalize(path: Path, out: Path) -> None:
    """Compute the normalisation statistics (seen envs, training trajectories), mark complete, rename.

    Non-finite statistics (NaN/inf in the training data: a diverged solver) are a ``ValueError`` naming the
    environments, and the file is left unfinished: every later stage would otherwise train on NaN."""
    h5py = _h5py()
    with h5py.File(path, "r+") as f:
        if not bool(f["env_done"][...].all()):
            missing = np.flatnonzero(~f["env_done"][...]).tolist()
            raise RuntimeError(f"dataset {path}: environments {missing[:10]} are not written yet")
        with np.errstate(all="ignore"):  # non-finite statistics are reported below, with the environments
            mean, std = _channel_stats(f)
        if not (np.isfinite(mean).all() and np.isfinite(std).all()):
            raise ValueError(
                f"dataset {path}: the normalisation statistics are not finite (mean {mean.tolist()}, std "
                f"{std.tolist()}): NaN/inf in the training trajectories of seen environments {_nonfinite_envs(f)} "
                "(a diverged solver?); delete the file and change the settings"
            )
        g = f.require_group("stats")
        for k, v in (("mean", mean), ("std", std)):
            if k in g:
                del g[k]
            g.create_dataset(k, data=v)
        f.attrs["complete"] = True
    os.replace(path, out)


def _channel_stats(f) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean/std over the seen environments' training trajectories (float64 accumulation)."""
    seen = f["split/seen"][...]
    n_train = int(f.attrs["n_train_traj"])
    traj = f["trajectories"]
    ch_axis = 3  # [env, traj, frame, C, ...]
    s = s2 = None
    count = 0
    for e in seen:
        x = traj[int(e), :n_train].astype(np.float64)
        axes = tuple(i for i in range(x.ndim) if i != ch_axis - 1)
        s = x.sum(axis=axes) + (0 if s is None else s)
        s2 = (x * x).sum(axis=axes) + (0 if s2 is None else s2)
        count += x.size // x.shape[ch_axis - 1]
    mean = s / count
    var = np.maximum(s2 / count - mean**2, 0.0)
    # A constant channel would divide by zero; keep it unscaled instead.
    std = np.where(var > 1e-24, np.sqrt(var), 1.0)
    return mean.astype(np.float32), std.astype(np.float32)


def _nonfinite_envs(f) -> list[int]:
    """Seen environments whose training trajectories hold a NaN/inf (beyond float32 range once stored)."""
    n_train = int(f.attrs["n_train_traj"])
    return [int(e) for e in f["split/seen"][...] if not np.isfinite(f["trajectories"][int(e), :n_train]).all()]


# ------------------------------------------------------------------------------------------------
# reading
# ------------------------------------------------------------------------------------------------
def _index(sel, n: int, what: str) -> list[int] | slice:
    if sel is None:
        return slice(0, n)
    if isinstance(sel, slice):
        return sel
    if isinstance(sel, torch.Tensor):
        sel = sel.tolist()
    if isinstance(sel, int | np.integer):
        sel = [int(sel)]
    sel = [int(i) for i in sel]
    bad = [i for i in sel if not 0 <= i < n]
    if bad:
        raise IndexError(f"{what}: index {bad[0]} out of range [0, {n})")
    return sel


# What a later stage must agree on with the dataset it reads, by what it records (a zoo records all of
# ``EnvDataset.identity``; a DynaDiff run the system, grid and standardisation). Exact except the float stats.
_MATCH_KEYS = ("system_name", "channel_names", "param_names", "frame_shape", "mean", "std", "dt_frame", "params",
               "split", "n_train_traj", "seed")  # fmt: skip
_CLOSE_KEYS = ("mean", "std", "dt_frame", "params")


def identity_mismatches(recorded: dict[str, Any], ds: EnvDataset) -> list[str]:
    """``"key: recorded X, this dataset Y"`` for every identity fact in ``recorded`` (a zoo's ``dataset`` record,
    a DynaDiff run's manifest) that ``ds`` does not share; only keys ``recorded`` holds are compared."""
    ours = {**ds.identity(), "dt_frame": ds.dt_frame}
    out = []
    for key in _MATCH_KEYS:
        if key not in recorded:
            continue
        a, b = recorded[key], ours[key]
        if key in _CLOSE_KEYS:
            ta, tb = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
            same = ta.shape == tb.shape and bool(torch.allclose(ta, tb, rtol=1e-5, atol=1e-7))
        else:
            same = a == b
        if not same:
            out.append(f"{key}: recorded {io.short_repr(a)}, this dataset {io.short_repr(b)}")
    return out


class EnvDataset:
    """Lazy reader of a dataset file (see module docstring). Use as a context manager or call ``close``."""

    def __init__(self, path: str | os.PathLike):
        h5py = _h5py()
        self.path = Path(path)
        if not self.path.exists():
            partial = self.path.with_name(self.path.name + ".partial")
            hint = (
                f" (an unfinished {partial.name} exists: re-run `dynadiff simulate` or `dynadiff import` to resume)"
                if partial.exists()
                else ""
            )
            raise FileNotFoundError(f"dataset: {self.path} does not exist{hint}")
        try:
            self._f = h5py.File(self.path, "r")
        except OSError as err:
            raise ValueError(f"dataset: {self.path} is not a readable HDF5 file ({err})") from err
        a = self._f.attrs
        if a.get("format") != FORMAT:
            raise ValueError(f"dataset: {self.path} has format {a.get('format')!r}, expected {FORMAT!r}")
        if not bool(a.get("complete", False)):
            raise ValueError(
                f"dataset: {self.path} is incomplete; re-run `dynadiff simulate` or `dynadiff import` to finish it"
            )
        self.system_name: str = str(a["system"])
        self.param_names: tuple[str, ...] = tuple(json.loads(a["param_names"]))
        self.channel_names: tuple[str, ...] = tuple(json.loads(a["channel_names"]))
        self.dt_frame = float(a["dt_frame"])
        self.seed = int(a["seed"])
        self.n_train_traj = int(a["n_train_traj"])
        self.config: dict[str, Any] = json.loads(a["config"])
        self.solver: dict[str, Any] = json.loads(a["solver"])
        self.versions: dict[str, str] = json.loads(a["versions"])
        self.params = torch.from_numpy(self._f["params"][...])
        self.split = {k: torch.from_numpy(self._f[f"split/{k}"][...]) for k in SPLITS}
        self.mean = torch.from_numpy(self._f["stats/mean"][...])
        self.std = torch.from_numpy(self._f["stats/std"][...])
        shape = self._f["trajectories"].shape
        self.n_env, self.n_traj, self.n_frames = shape[:3]
        self.frame_shape: tuple[int, ...] = tuple(shape[3:])

    @classmethod
    def open(cls, path: str | os.PathLike) -> EnvDataset:
        return cls(path)

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> EnvDataset:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"EnvDataset({self.path.name}: {self.system_name}, {self.n_env} envs x {self.n_traj} traj x "
            f"{self.n_frames} frames x {self.frame_shape}, seen {len(self.split['seen'])})"
        )

    # ---- normalisation ----------------------------------------------------------------------------
    @property
    def _channel_axis(self) -> int:
        return -len(self.frame_shape)

    def _stat_view(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        shape = [t.shape[0]] + [1] * (len(self.frame_shape) - 1)
        return t.reshape(shape).to(like.device, like.dtype)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Standardise per channel: (x - mean[c]) / std[c]; channels on axis -3 (fields) or -1 (ODE)."""
        return (x - self._stat_view(self.mean, x)) / self._stat_view(self.std, x)

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        return x * self._stat_view(self.std, x) + self._stat_view(self.mean, x)

    # ---- loading -----------------------------------------------------------------------------------
    def load(self, envs=None, trajs=None, frames=None, normalized: bool = True) -> torch.Tensor:
        """float32 ``[n_envs, n_trajs, n_frames, *frame_shape]`` for the selected environments,
        trajectories and frames (each an int, a list, a slice or None for all)."""
        e = _index(envs, self.n_env, "envs")
        t = _index(trajs, self.n_traj, "trajs")
        fr = _index(frames, self.n_frames, "frames")
        dset = self._f["trajectories"]
        env_ids = range(self.n_env)[e] if isinstance(e, slice) else e
        traj_ids = range(self.n_traj)[t] if isinstance(t, slice) else t
        frame_ids = range(self.n_frames)[fr] if isinstance(fr, slice) else fr
        shape = (len(env_ids), len(traj_ids), len(frame_ids), *self.frame_shape)
        out = np.empty(shape, dtype=np.float32)
        # One HDF5 chunk per trajectory: read each selected trajectory once, then pick its frames.
        for a, i in enumerate(env_ids):
            for b, j in enumerate(traj_ids):
                out[a, b] = dset[i, j][fr]
        x = torch.from_numpy(out)
        return self.normalize(x) if normalized else x

    def train(self, envs=None, normalized: bool = True) -> torch.Tensor:
        """Training trajectories ``[n_envs, n_train_traj, n_frames, ...]``."""
        return self.load(envs, slice(0, self.n_train_traj), None, normalized)

    def test(self, envs=None, normalized: bool = True) -> torch.Tensor:
        """Held-out test trajectories ``[n_envs, n_traj - n_train_traj, n_frames, ...]``."""
        return self.load(envs, slice(self.n_train_traj, self.n_traj), None, normalized)

    def identity(self) -> dict[str, Any]:
        """The facts that make two dataset files the same data for a later stage (not the path): what a zoo
        and a DynaDiff run record about the dataset they were built from, checked by ``identity_mismatches``."""
        return {
            "system_name": self.system_name,
            "param_names": list(self.param_names),
            "channel_names": list(self.channel_names),
            "params": self.params.tolist(),
            "split": {k: v.tolist() for k, v in self.split.items()},
            "n_traj": self.n_traj,
            "n_train_traj": self.n_train_traj,
            "n_frames": self.n_frames,
            "frame_shape": list(self.frame_shape),
            "seed": self.seed,
            "mean": self.mean.tolist(),
            "std": self.std.tolist(),
        }

    def system(self):
        """The ``System`` with the settings the file was simulated with."""
        from dynadiff_fast.systems import get_system

        return get_system(self.system_name, **self.solver)
