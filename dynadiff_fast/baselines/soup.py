"""Model soups of the zoo (Wortsman et al., 2022): weight averages of the zoo experts, which share the base
model's initialisation so their weights average meaningfully.

soup_uniform   the plain mean of every zoo expert (one model for all environments).
soup_prefix    per test environment, weights ``w_e ∝ 1 / err_e^2`` from each expert's prefix error on the
               observed frames (inverse-error weighting: experts that fit the observations dominate).
"""

from __future__ import annotations

import torch

from dynadiff_fast.baselines.common import (
    Adapted,
    Context,
    Timer,
    adapted_experts,
    batched,
    combine,
    prefix_rollout_errors,
    shared_rollout,
)
from dynadiff_fast.eval.protocol import Task

NAMES = ("soup_uniform", "soup_prefix")


def prefix_weights(errors: torch.Tensor) -> torch.Tensor:
    """Inverse-squared-error soup weights ``[N, E]`` (rows sum to 1) from prefix errors ``[N, E]``."""
    inv = errors.double().clamp_min(1e-12).reciprocal().square()
    return (inv / inv.sum(dim=1, keepdim=True)).float()


def run(ctx: Context, task: Task) -> dict[str, Adapted]:
    zoo = ctx.cached("zoo_experts", lambda: ctx.zoo.batched().to(ctx.device))
    stacked = zoo.stacked()
    n_zoo = zoo.num_experts
    uniform = batched(ctx.zoo.config, combine(stacked, torch.full((1, n_zoo), 1.0 / n_zoo))).to(ctx.device)
    with Timer() as t:
        weights = prefix_weights(prefix_rollout_errors(zoo, task.obs.to(ctx.device)))
        mixed = batched(ctx.zoo.config, combine(stacked, weights)).to(ctx.device)
    return {
        "soup_uniform": Adapted(shared_rollout(uniform), 0.0, 1, {}),
        "soup_prefix": adapted_experts(mixed, t.seconds, max_weight=weights.max(dim=1).values.tolist()),
    }
