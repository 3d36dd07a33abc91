"""Ensembles of stacked experts: K members per environment in one container, rolled out in one batched call.

An ensemble of N environments with K members each is one ``StackedExperts`` (``BatchedFNO``, ``BatchedMLP``)
of N*K experts, environment-major: expert ``n*K + k`` is member k of environment n.

``rollout_ensemble(experts, x0, steps)``: every member of environment n rolls out from that environment's
initial frames ``x0[n]`` (all B of them), all N*K members in one batched call (the container chunks its
experts itself) -> ``[N, K, B, steps+1, *frame]``; ``rollout_ensemble_reference`` does the same one expert
at a time.

``pick_ensemble``: from G groups of K candidates per environment (DynaDiff's K samples at each of its G
guidance scales), keep per environment the group whose K members score the lowest fair CRPS
(``metrics.crps_ensemble``) on the observed prefix: each member rolls out L-1 steps from the first
observed frame and is scored against the observed frames 1..L-1,

    prefix_crps[n, g] = mean_{t=1..L-1, c, x} crps({x̂_t of the K members of group g}, obs_t),

the probabilistic counterpart of the prefix score every method selects by (``experts.evaluate.prefix_error``,
returned for each kept member). CRPS is a proper score: it rewards the group whose spread matches its
error, not merely the sharpest one.
"""

from __future__ import annotations

import warnings

import torch

from dynadiff_fast.experts.evaluate import prefix_error


def _members(experts, n_env: int) -> int:
    if n_env < 1 or experts.num_experts % n_env:
        raise ValueError(
            f"x0: {n_env} environments do not divide the {experts.num_experts} experts into equal ensembles "
            "(expected N*K experts, environment-major)"
        )
    return experts.num_experts // n_env


@torch.no_grad()
def rollout_ensemble(experts, x0: torch.Tensor, steps: int) -> torch.Tensor:
    """Members ``n*K + k`` of ``experts`` (N*K of them) roll out from ``x0 [N, B, *frame]`` for ``steps`` steps
    -> ``[N, K, B, steps+1, *frame]`` (frame 0 = x0), in one batched call, without autograd."""
    k = _members(experts, x0.shape[0])
    out = experts.rollout(x0.repeat_interleave(k, dim=0), steps)  # [N*K, B, steps+1, ...]
    return out.reshape(x0.shape[0], k, *out.shape[1:])


@torch.no_grad()
def rollout_ensemble_reference(experts, x0: torch.Tensor, steps: int) -> torch.Tensor:
    """``rollout_ensemble`` one expert at a time (what the batched call replaces)."""
    k = _members(experts, x0.shape[0])
    rows = [experts.select([e]).rollout(x0[e // k], steps)[0] for e in range(experts.num_experts)]
    out = torch.stack(rows)
    return out.reshape(x0.shape[0], k, *out.shape[1:])


def prefix_crps(rollouts: torch.Tensor, obs: torch.Tensor) -> torch.Tensor:
    """Fair CRPS on the observed frames 1..L-1 of groups of K >= 2 member rollouts started at ``obs[:, 0]``.

    rollouts: ``[N, G, K, L, *frame]``; obs: ``[N, L, *frame]`` -> ``[N, G]`` float64.
    """
    from dynadiff_fast.metrics import crps_ensemble

    if rollouts.dim() != obs.dim() + 2 or rollouts.shape[0] != obs.shape[0] or rollouts.shape[3:] != obs.shape[1:]:
        raise ValueError(f"rollouts {tuple(rollouts.shape)} do not match obs {tuple(obs.shape)} as [N, G, K, L, ...]")
    g = rollouts.shape[1]
    truth = obs[:, None, 1:].expand(-1, g, *[-1] * (obs.dim() - 1))  # [N, G, L-1, *frame]
    return crps_ensemble(rollouts[:, :, :, 1:], truth, dim=2).double().flatten(2).mean(-1)


@torch.no_grad()
def pick_ensemble(experts, obs: torch.Tensor, groups: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per environment, the group of K members with the lowest prefix CRPS (module docstring).

    experts: N*G*K candidates, expert ``(n*G + g)*K + k`` is member k of group g of environment n;
    obs: ``[N, L, *frame]`` observations of the N environments. With L = 1 there is nothing to score: the
    first group is kept (with a warning).
    Returns ``(keep, scores)``: the kept experts' indices ``[N*K]`` (environment-major) and their prefix
    scores (``prefix_error``, MSE) ``[N*K]`` (NaN when L = 1).
    """
    n_env, length = obs.shape[:2]
    if not isinstance(groups, int) or groups < 1 or experts.num_experts % (n_env * groups):
        raise ValueError(
            f"groups: expected an int >= 1 dividing {experts.num_experts} / {n_env} candidates, got {groups!r}"
        )
    k = experts.num_experts // (n_env * groups)
    if k < 2:
        raise ValueError(f"n_samples: an ensemble needs K >= 2 members per group, got K = {k}")
    pick = torch.zeros(n_env, dtype=torch.long)
    scores = torch.full((n_env, groups, k), float("nan"))
    if length < 2:
        warnings.warn("ensemble with L = 1 frame has no frame pair to score: kept the first group", stacklevel=3)
    else:
        crps = torch.empty(n_env, groups, dtype=torch.float64)
        for n in range(n_env):  # one environment at a time: memory holds one environment's G*K prefix rollouts
            first = n * groups * k
            roll = experts.select(slice(first, first + groups * k)).rollout(obs[n, :1], length - 1)
            roll = roll[:, 0].reshape(groups, k, *obs.shape[1:])  # [G, K, L, *frame]
            crps[n] = prefix_crps(roll[None], obs[n : n + 1])[0].cpu()
            scores[n] = prefix_error(roll, obs[n].expand(groups, *obs.shape[1:])).cpu()
        pick = crps.nan_to_num(float("inf")).argmin(1)
    keep = ((torch.arange(n_env) * groups + pick)[:, None] * k + torch.arange(k)).flatten()
    return keep, scores.flatten()[keep]
