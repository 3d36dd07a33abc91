"""Probabilistic scores of the methods with K >= 2 predictors per environment (an ensemble: DynaDiff's sampled
experts, the zoo's experts of the nearest environment, the soup's members, prefix fine-tuning from several
seeds), beside the point scores of ``eval.protocol``.

Per environment, on the same rollouts the RMSE is computed from (predictions ``[N, K, B, T+1, *frame]``,
truth ``[N, B, T+1, *frame]``, steps 1..T), with the point metrics of ``metrics`` (module docstring there):

crps            fair CRPS per point, averaged over the frame -> per (env, traj, step), then over traj and steps.
spread_skill    sqrt((K+1)/K) sqrt(mean spread^2 / mean error^2) over the environment's trajectories and steps:
                1 = calibrated, < 1 over-confident, > 1 under-confident.
coverage50/90   mean PIT coverage of the central 50% / 90% intervals (nominal 0.5 / 0.9 when calibrated).
rank_hist       frequencies of the rank of the truth among the K members ``[K+1]`` (flat when calibrated).

Summary entries (``add_summary``; results.json beside ``rmse``): ``crps``, ``spread_skill``, ``coverage50``,
``coverage90`` as ``{"mean", "std"}`` over environments (and per sub-split in ``by_split``); ``rank_hist``
pooled over the domain; per lead time ``curve_crps``, ``curve_spread`` (ensemble standard deviation scaled by
sqrt((K+1)/K), so a calibrated ensemble has spread = skill), ``curve_skill`` (RMSE of the ensemble mean) and
``curve_spread_skill``; ``ensemble_size`` K; and each ``per_env`` row gets its own four values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from dynadiff_fast.metrics import (
    crps_ensemble,
    ensemble_spread_error,
    pit_coverage,
    rank_histogram,
    spread_skill,
)

LEVELS = (0.5, 0.9)
METRICS = ("crps", "spread_skill", "coverage50", "coverage90")


@dataclass
class EnsembleScores:
    """Per environment, trajectory and step: ``crps``, ``spread2``, ``error2`` ``[N, B, T]`` float64,
    ``coverage`` ``[N, B, T, len(LEVELS)]``; ``rank_hist`` ``[N, K+1]`` (frequencies per environment); ``members`` K."""

    crps: torch.Tensor
    spread2: torch.Tensor
    error2: torch.Tensor
    coverage: torch.Tensor
    rank_hist: torch.Tensor
    members: int


def score_ensemble(pred: torch.Tensor, true: torch.Tensor) -> EnsembleScores:
    """Scores of predictions ``[N, K, B, T+1, *frame]`` (K >= 2) against truth ``[N, B, T+1, *frame]`` on steps
    1..T, one environment at a time (memory: one environment's ensemble in float64)."""
    if pred.dim() < 5 or pred.shape[:1] + pred.shape[2:] != true.shape:
        raise ValueError(f"pred {tuple(pred.shape)} does not match truth {tuple(true.shape)} as [N, K, B, T+1, ...]")
    k = pred.shape[1]
    if k < 2:
        raise ValueError(f"pred: an ensemble needs K >= 2 predictors per environment, got K = {k}")
    frame_dims = true.dim() - 3
    rows = []
    for n in range(pred.shape[0]):
        p, t = pred[n, :, :, 1:], true[n, :, 1:]
        spread2, error2 = ensemble_spread_error(p, t, frame_dims=frame_dims)
        cover = [pit_coverage(p, t, level).double().flatten(-frame_dims).mean(-1) for level in LEVELS]
        crps = crps_ensemble(p, t).double().flatten(-frame_dims).mean(-1)
        rows.append((crps, spread2, error2, torch.stack(cover, -1), rank_histogram(p, t)))
    crps, spread2, error2, cover, hist = (torch.stack(c) for c in zip(*rows, strict=True))
    return EnsembleScores(crps, spread2, error2, cover, hist, k)


def cat_ensemble_scores(parts: list[EnsembleScores]) -> EnsembleScores:
    """Concatenate chunks of environments (one ensemble size)."""
    sizes = {p.members for p in parts}
    if len(sizes) != 1:
        raise ValueError(f"parts: chunks of different ensemble sizes {sorted(sizes)}")
    fields = ("crps", "spread2", "error2", "coverage", "rank_hist")
    return EnsembleScores(*(torch.cat([getattr(p, f) for p in parts]) for f in fields), members=parts[0].members)


def _ratio(spread2: torch.Tensor, error2: torch.Tensor, k: int) -> float | None:
    """``metrics.spread_skill`` over all of ``spread2``/``error2``; None where it is not finite (a zero error),
    since strict JSON has no NaN or inf."""
    r = float(spread_skill(spread2, error2, k))
    return r if math.isfinite(r) else None


def _stats(values: list[float | None]) -> dict[str, float] | None:
    x = torch.tensor([v for v in values if v is not None], dtype=torch.float64)
    if x.numel() == 0:
        return None
    return {"mean": float(x.mean()), "std": float(x.std(unbiased=False)) if x.numel() > 1 else 0.0}


def per_env_values(s: EnsembleScores) -> list[dict[str, float | None]]:
    """The four scores of each environment (module docstring)."""
    out = []
    for n in range(s.crps.shape[0]):
        cover = s.coverage[n].flatten(0, 1).mean(0)
        out.append(
            {
                "crps": float(s.crps[n].mean()),
                "spread_skill": _ratio(s.spread2[n], s.error2[n], s.members),
                "coverage50": float(cover[0]),
                "coverage90": float(cover[1]),
            }
        )
    return out


def add_summary(summary: dict, s: EnsembleScores, task) -> dict:
    """Add the ensemble scores to ``eval.protocol.summarize``'s ``summary`` of the same task (in place; returned)."""
    rows = per_env_values(s)
    for row, entry in zip(rows, summary["per_env"], strict=True):
        entry.update(row)
    for name in METRICS:
        summary[name] = _stats([r[name] for r in rows])
        for sub in sorted(set(task.subsplit)):
            vals = [r[name] for r, split in zip(rows, task.subsplit, strict=True) if split == sub]
            summary.setdefault("by_split", {}).setdefault(sub, {})[name] = _stats(vals)
    k = s.members
    spread = ((k + 1) / k * s.spread2.mean(dim=(0, 1))).sqrt()
    skill = s.error2.mean(dim=(0, 1)).sqrt()
    summary.update(
        ensemble_size=k,
        rank_hist=s.rank_hist.mean(0).tolist(),
        curve_crps=s.crps.mean(dim=(0, 1)).tolist(),
        curve_spread=spread.tolist(),
        curve_skill=skill.tolist(),
        curve_spread_skill=[_ratio(a, b, k) for a, b in zip(s.spread2.flatten(0, 1).T, s.error2.flatten(0, 1).T)],
    )
    return summary


def probe(frames: torch.Tensor, frame_dims: int) -> torch.Tensor:
    """The value of channel 0 at the grid centre (the state's channel 0 for ODE frames) of ``[..., *frame]``
    -> ``[...]``: the point the ensemble-band figure follows over the rollout."""
    if frame_dims == 1:
        return frames[..., 0]
    centre = tuple(n // 2 for n in frames.shape[-frame_dims + 1 :])
    return frames[(..., 0, *centre)]
