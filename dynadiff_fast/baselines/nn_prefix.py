"""Nearest zoo expert: for each test environment, the zoo expert whose rollout from the first observed
frame has the lowest error on the observed frames 1..L-1 (``protocol.prefix_error``). Training-free; the
retrieval analogue of DynaDiff with a zoo in place of a generator."""

from __future__ import annotations

import torch

from dynadiff_fast.baselines.common import Adapted, Context, Timer, adapted_experts, prefix_rollout_errors
from dynadiff_fast.eval.protocol import Task

NAMES = ("nn_prefix",)


def select_nearest(experts, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Index of the best expert per environment ``[N]`` and the prefix errors ``[N, E]`` (on the CPU)."""
    errors = prefix_rollout_errors(experts, obs).cpu()
    return errors.argmin(dim=1), errors


def run(ctx: Context, task: Task) -> dict[str, Adapted]:
    zoo = ctx.cached("zoo_experts", lambda: ctx.zoo.batched().to(ctx.device))
    with Timer() as t:
        best, _ = select_nearest(zoo, task.obs.to(ctx.device))
        chosen = zoo.select(best)
    envs = ctx.zoo.env_index[best].tolist()
    return {"nn_prefix": adapted_experts(chosen, t.seconds, zoo_index=best.tolist(), zoo_env=envs)}
