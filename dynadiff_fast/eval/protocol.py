"""The evaluation protocol (paper Sec. 4): one initial frame in, an autoregressive rollout out.

Domains
    in_domain   the seen environments (those the zoo/VAE/DiT were trained on), new initial conditions:
                the dataset's *test* trajectories of those environments.
    out_domain  the unseen environments, both inside (``unseen_in``) and outside (``unseen_out``) the
                seen parameter range; their test trajectories. Per-environment numbers keep the sub-split.

Observation sequence (what a method may adapt on)
    the first ``obs_len`` (L, default 10) frames of trajectory ``obs_traj`` of the test environment, a
    *training* trajectory (index < n_train_traj), so it is a different trajectory from every evaluated
    one. A ``Task`` holds only these frames and frame 0 of every test trajectory; the later test
    frames (the truth) are read by ``truth`` after adaptation, so no method can see them.

Scores
    every test trajectory is rolled out ``rollout_steps`` steps from its frame 0; RMSE and SSIM
    (``metrics``, standardised fields) per step t = 1..T, averaged over trajectories
    -> per-environment curves; averaged over steps -> per-environment values; mean ± std over
    environments (and over generated samples, for methods with several per environment).

Shapes: obs ``[N, L, C, *S]``, x0 ``[N, B, C, *S]``, truth ``[N, B, T+1, C, *S]``, predictions
``[N, K, B, T+1, C, *S]`` (K predictors per environment, e.g. K samples of DynaDiff with select="none").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from dynadiff_fast.experts.evaluate import prefix_error  # noqa: F401  (the one prefix score, re-exported)
from dynadiff_fast.metrics import rmse, ssim
from dynadiff_fast.profiling import nvtx_range

DOMAINS = ("in_domain", "out_domain")
_DOMAIN_SPLITS = {"in_domain": ("seen",), "out_domain": ("unseen_in", "unseen_out")}

# rollout(step, x0, steps): step maps states [..., C, *S] -> next states of the same shape.
StepFn = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class ProtocolConfig:
    """Evaluation protocol settings.

    obs_len: L, frames of the observation sequence (paper default 10).
    obs_traj: the training trajectory of each test environment that provides the observation sequence.
    rollout_steps: autoregressive steps per test trajectory; None = every frame in the file.
    max_test_traj: evaluate at most this many test trajectories per environment (None = all).
    gaussian_ssim: SSIM window (see ``metrics``).
    """

    obs_len: int = field(default=10, metadata={"help": "observation frames L"})
    obs_traj: int = field(default=0, metadata={"help": "training trajectory giving the observations"})
    rollout_steps: int | None = field(default=None, metadata={"help": "rollout steps (None: all frames)"})
    max_test_traj: int | None = field(default=None, metadata={"help": "test trajectories per env (None: all)"})
    gaussian_ssim: bool = field(default=True, metadata={"help": "Gaussian 11x11 SSIM window (else 7x7 uniform)"})


@dataclass
class Task:
    """What a method is given for one domain: environments, their observation sequences, and the
    initial frames of the trajectories it must predict. Contains no future test frame."""

    domain: str
    envs: torch.Tensor  # int64 [N] dataset env indices
    params: torch.Tensor  # float64 [N, P] (only param-conditioned baselines with true params use them)
    subsplit: list[str]  # per env: "seen" | "unseen_in" | "unseen_out"
    obs: torch.Tensor  # [N, L, C, *S] standardised
    x0: torch.Tensor  # [N, B, C, *S] standardised frame 0 of the test trajectories
    test_trajs: list[int]  # dataset trajectory indices of the B test trajectories
    steps: int  # rollout steps T

    @property
    def n_env(self) -> int:
        return int(self.envs.numel())


def domain_envs(ds) -> dict[str, tuple[torch.Tensor, list[str]]]:
    """``{domain: (env indices int64 [N], sub-split name per env)}`` from the dataset split."""
    out = {}
    for domain, names in _DOMAIN_SPLITS.items():
        envs = [torch.as_tensor(ds.split[n], dtype=torch.int64).reshape(-1) for n in names]
        tags = [n for n, e in zip(names, envs, strict=True) for _ in range(e.numel())]
        out[domain] = (torch.cat(envs), tags)
    return out


def check_config(ds, cfg: ProtocolConfig) -> int:
    """Validate ``cfg`` against the dataset; returns the rollout length T."""
    if not 2 <= cfg.obs_len <= ds.n_frames:
        raise ValueError(f"obs_len: expected 2 <= L <= n_frames ({ds.n_frames}), got {cfg.obs_len}")
    if not 0 <= cfg.obs_traj < ds.n_train_traj:
        raise ValueError(
            f"obs_traj: must be a training trajectory, 0 <= obs_traj < n_train_traj ({ds.n_train_traj}), "
            f"got {cfg.obs_traj} (test trajectories are never observed)"
        )
    if ds.n_traj <= ds.n_train_traj:
        raise ValueError(f"dataset: has no test trajectories (n_traj {ds.n_traj} = n_train_traj)")
    steps = ds.n_frames - 1 if cfg.rollout_steps is None else cfg.rollout_steps
    if not 1 <= steps <= ds.n_frames - 1:
        raise ValueError(f"rollout_steps: expected 1 <= T <= {ds.n_frames - 1}, got {cfg.rollout_steps}")
    if cfg.max_test_traj is not None and cfg.max_test_traj < 1:
        raise ValueError(f"max_test_traj: expected >= 1 or None, got {cfg.max_test_traj}")
    return steps


def make_task(ds, domain: str, cfg: ProtocolConfig | None = None) -> Task:
    """The ``Task`` of ``domain`` (``"in_domain"`` or ``"out_domain"``): observations and initial frames only."""
    cfg = cfg or ProtocolConfig()
    if domain not in DOMAINS:
        raise ValueError(f"domain: expected one of {DOMAINS}, got {domain!r}")
    steps = check_config(ds, cfg)
    envs, tags = domain_envs(ds)[domain]
    if envs.numel() == 0:
        raise ValueError(f"dataset: the {domain} split has no environments")
    test = list(range(ds.n_train_traj, ds.n_traj))
    if cfg.max_test_traj is not None:
        test = test[: cfg.max_test_traj]
    env_list = envs.tolist()
    obs = ds.load(env_list, trajs=[cfg.obs_traj], frames=slice(0, cfg.obs_len))[:, 0]
    x0 = ds.load(env_list, trajs=test, frames=[0])[:, :, 0]
    params = torch.as_tensor(ds.params, dtype=torch.float64)[envs]
    return Task(domain, envs, params, tags, obs, x0, test, steps)


def truth(ds, task: Task) -> torch.Tensor:
    """The test trajectories ``[N, B, T+1, C, *S]`` the rollouts are scored against."""
    return ds.load(task.envs.tolist(), trajs=task.test_trajs, frames=slice(0, task.steps + 1))


def rollout(step: StepFn, x0: torch.Tensor, steps: int, frame_dims: int = 3) -> torch.Tensor:
    """Autoregressive rollout ``x_{t+1} = step(x_t)``: x0 ``[..., *frame]`` -> ``[..., steps+1, *frame]``
    (frame 0 = x0; ``frame_dims`` trailing dims form a frame: 3 for ``[C, H, W]`` fields, 1 for ODE states)."""
    if steps < 0:
        raise ValueError(f"steps: expected >= 0, got {steps}")
    if not 1 <= frame_dims <= x0.dim():
        raise ValueError(f"frame_dims: expected 1..{x0.dim()} for x0 of shape {tuple(x0.shape)}, got {frame_dims}")
    frames = [x0]
    x = x0
    for _ in range(steps):
        x = step(x)
        frames.append(x)
    return torch.stack(frames, dim=x0.dim() - frame_dims)


@dataclass
class Scores:
    """Per-environment, per-predictor, per-trajectory, per-step metrics: ``rmse``/``ssim`` ``[N, K, B, T]``
    (``ssim`` None for ODE states)."""

    rmse: torch.Tensor
    ssim: torch.Tensor | None


def score(pred: torch.Tensor, true: torch.Tensor, gaussian_ssim: bool = True) -> Scores:
    """Score predictions ``[N, K, B, T+1, C, *S]`` against truth ``[N, B, T+1, C, *S]`` on steps 1..T."""
    if pred.shape[:1] + pred.shape[2:] != true.shape:
        raise ValueError(f"pred {tuple(pred.shape)} does not match truth {tuple(true.shape)} as [N, K, B, T+1, ...]")
    with nvtx_range("eval/score"):
        frame_dims = true.dim() - 3
        p, t = pred[:, :, :, 1:], true[:, None, :, 1:].expand_as(pred[:, :, :, 1:])
        r = rmse(p, t, frame_dims=frame_dims)
        s = ssim(p, t, gaussian=gaussian_ssim) if frame_dims == 3 and min(true.shape[-2:]) >= 11 else None
    if not torch.isfinite(r).all():
        bad = (~torch.isfinite(r)).nonzero()[0].tolist()
        raise ValueError(f"score: non-finite RMSE at [env, sample, traj, step] = {bad}; the rollout diverged")
    return Scores(r, s)


def cat_scores(parts: list[Scores]) -> Scores:
    """Concatenate chunks of environments."""
    return Scores(
        torch.cat([p.rmse for p in parts]),
        None if parts[0].ssim is None else torch.cat([p.ssim for p in parts]),
    )


def _stats(x: torch.Tensor) -> tuple[float, float]:
    x = x.double()
    return float(x.mean()), float(x.std(unbiased=False)) if x.numel() > 1 else 0.0


def summarize(scores: Scores, task: Task) -> dict:
    """JSON-ready summary of one method on one domain.

    rmse / ssim: ``{"mean", "std"}`` over environments x predictors (K samples); ``curve_*``: mean per step
    ``[T]``; ``per_env``: one entry per environment with its id, parameters, sub-split, mean metric and its
    std over the K predictors.
    """
    out: dict = {"n_env": task.n_env, "n_traj": len(task.test_trajs), "steps": task.steps}
    per_env = [
        {"env": int(e), "params": task.params[i].tolist(), "split": task.subsplit[i]}
        for i, e in enumerate(task.envs.tolist())
    ]
    for name in ("rmse", "ssim"):
        m = getattr(scores, name)
        if m is None:
            out[name] = None
            out[f"curve_{name}"] = None
            continue
        per_pred = m.mean(dim=(2, 3))  # [N, K]: traj- and step-averaged
        mean, std = _stats(per_pred)
        out[name] = {"mean": mean, "std": std}
        out[f"curve_{name}"] = m.mean(dim=(0, 1, 2)).tolist()
        for i, row in enumerate(per_pred):
            per_env[i][name] = float(row.mean())
            per_env[i][f"{name}_std"] = _stats(row)[1]
        for sub in sorted(set(task.subsplit)):
            idx = [i for i, s in enumerate(task.subsplit) if s == sub]
            out.setdefault("by_split", {}).setdefault(sub, {})[name] = dict(
                zip(("mean", "std"), _stats(per_pred[idx]), strict=True)
            )
    out["per_env"] = per_env
    return out


def env_chunks(n: int, chunk: int | None) -> list[slice]:
    """Slices covering ``range(n)`` in chunks of ``chunk`` (None: one chunk)."""
    size = n if not chunk else max(1, chunk)
    return [slice(i, min(n, i + size)) for i in range(0, n, size)]
