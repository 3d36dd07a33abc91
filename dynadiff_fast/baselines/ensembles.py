"""Ensembles from the zoo: K predictors per test environment, training-free, scored like DynaDiff's sampled experts
(CRPS, spread/skill, coverage: ``eval.probabilistic``) so the report compares like with like.

nn_ensemble    the zoo experts of the environment ``nn_prefix`` retrieves (the environment of the expert with the
               lowest prefix score on the observed frames): its K experts (``experts_per_env``; the fewest any
               retrieved environment has), fine-tuned from the same base with different noise and data order.
soup_members   the K = ``n_samples`` zoo experts with the largest ``soup_prefix`` weights, i.e. the lowest prefix
               errors (they may come from several environments), equally weighted: the soup's members as an
               ensemble instead of averaged into one model.
"""

from __future__ import annotations

import torch

from dynadiff_fast.baselines.common import Adapted, Context, Timer, adapted_experts, prefix_rollout_errors
from dynadiff_fast.eval.protocol import Task

NAMES = ("nn_ensemble", "soup_members")


def nearest_env_members(env_index: torch.Tensor, best: torch.Tensor) -> torch.Tensor:
    """Zoo indices ``[N, K]`` of the experts of each retrieved expert's environment (``env_index [E]`` of the zoo,
    ``best [N]`` retrieved experts), K the fewest experts any of those environments has, in zoo order."""
    rows = [(env_index == env_index[b]).nonzero().flatten() for b in best.tolist()]
    k = min(len(r) for r in rows)
    return torch.stack([r[:k] for r in rows])


def run(ctx: Context, task: Task) -> dict[str, Adapted]:
    zoo = ctx.cached("zoo_experts", lambda: ctx.zoo.batched().to(ctx.device))
    wanted = [key for key in NAMES if ctx.keys is None or key in ctx.keys]
    with Timer() as t:
        errors = prefix_rollout_errors(zoo, task.obs.to(ctx.device)).cpu()  # [N, E]
    out = {}
    if "nn_ensemble" in wanted:
        members = nearest_env_members(ctx.zoo.env_index, errors.argmin(dim=1))
        envs = ctx.zoo.env_index[members[:, 0]].tolist()
        out["nn_ensemble"] = adapted_experts(zoo.select(members.flatten()), t.seconds, members.shape[1], zoo_env=envs)
    if "soup_members" in wanted:
        top = errors.argsort(dim=1)[:, : min(ctx.n_samples, zoo.num_experts)]
        out["soup_members"] = adapted_experts(
            zoo.select(top.flatten()), t.seconds, top.shape[1], zoo_index=top.tolist()
        )
    return out
