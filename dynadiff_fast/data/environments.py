"""Environment grids and the seen / unseen split.

The split is stored in every dataset file so that the zoo, the generative model and the evaluation all
agree on which environments were seen. ``unseen_out`` environments lie outside the range spanned by
the seen ones (extrapolation), ``unseen_in`` inside it (interpolation).
"""

from __future__ import annotations

import itertools

import torch


def environment_grid(env_grid: tuple[tuple[float, float, int], ...]) -> torch.Tensor:
    """Tensor product of ``linspace(lo, hi, count)`` per parameter -> float64 ``[n_env, P]``
    (the last parameter varies fastest)."""
    axes = []
    for i, (lo, hi, count) in enumerate(env_grid):
        if count < 1:
            raise ValueError(f"env_grid[{i}]: count must be >= 1, got {count}")
        axes.append(torch.linspace(lo, hi, count, dtype=torch.float64).tolist())
    return torch.tensor(list(itertools.product(*axes)), dtype=torch.float64)


def split_environments(params: torch.Tensor, n_seen: int, out_fraction: float, seed: int) -> dict[str, torch.Tensor]:
    """Choose seen / unseen_in / unseen_out environment indices (sorted int64 tensors).

    An environment is *outer* when, in any parameter, it lies within ``out_fraction`` of that parameter's
    range from either end. Seen environments are drawn (by ``seed``) from the inner ones; unseen inner
    environments inside the seen bounding box form ``unseen_in`` and every other environment
    ``unseen_out`` (so ``unseen_out`` is outside the seen range in at least one parameter).
    """
    n_env = params.shape[0]
    if not 1 <= n_seen < n_env:
        raise ValueError(f"n_seen: must be in [1, {n_env - 1}] for {n_env} environments, got {n_seen}")
    if not 0.0 <= out_fraction < 0.5:
        raise ValueError(f"out_fraction: must be in [0, 0.5), got {out_fraction}")
    lo, hi = params.min(dim=0).values, params.max(dim=0).values
    span = (hi - lo).clamp_min(1e-12)
    rel = (params - lo) / span
    outer = ((rel < out_fraction - 1e-9) | (rel > 1 - out_fraction + 1e-9)).any(dim=1)
    inner = (~outer).nonzero().flatten()
    if len(inner) < n_seen:
        raise ValueError(
            f"n_seen: {n_seen} seen environments requested but only {len(inner)} lie inside the "
            f"out_fraction={out_fraction} band; lower n_seen or out_fraction"
        )
    g = torch.Generator().manual_seed(seed)
    seen = inner[torch.randperm(len(inner), generator=g)[:n_seen]].sort().values
    seen_lo, seen_hi = params[seen].min(dim=0).values, params[seen].max(dim=0).values
    is_seen = torch.zeros(n_env, dtype=torch.bool)
    is_seen[seen] = True
    inside = ((params >= seen_lo - 1e-12) & (params <= seen_hi + 1e-12)).all(dim=1)
    return {
        "seen": seen,
        "unseen_in": (~is_seen & inside).nonzero().flatten(),
        "unseen_out": (~is_seen & ~inside).nonzero().flatten(),
    }
