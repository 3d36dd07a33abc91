"""Prefix fine-tuning: the pooled base model fine-tuned on each test environment's observed frames
(its L-1 one-step pairs, full batch) for K Adam steps, K in ``budget.finetune_steps`` (10, 100, 1000):
one run of max(K) steps, snapshotted at each K, all environments at once in one ``BatchedFNO``
(``experts.train.finetune_experts``; each expert sees only its own environment's frames).
``seconds`` is the wall-clock up to each snapshot, for all the task's environments together."""

from __future__ import annotations

import time

import torch

from dynadiff_fast.baselines.common import Adapted, Context, adapted_experts, batched
from dynadiff_fast.eval.protocol import Task
from dynadiff_fast.state_dict import repeat_state_dict

STEPS = (10, 100, 1000)
NAMES = tuple(f"prefix_finetune_{k}" for k in STEPS)


def finetune_on_prefix(cfg, init: dict, obs: torch.Tensor, steps: tuple[int, ...], lr: float, seed: int):
    """Fine-tune one copy of ``init`` per environment on ``obs [N, L, C, H, W]``; returns
    ``{K: (stacked weights, seconds)}`` at every K in ``steps``."""
    from dynadiff_fast.experts.train import finetune_experts

    n, length = obs.shape[:2]
    t0 = time.perf_counter()
    experts = batched(cfg, repeat_state_dict(init, n)).to(obs.device)
    snaps: dict[int, tuple[dict, float]] = {}
    count = 0

    def on_step() -> None:
        nonlocal count
        count += 1
        if count in steps:
            snaps[count] = ({k: v.detach().clone() for k, v in experts.stacked().items()}, time.perf_counter() - t0)

    gens = [torch.Generator().manual_seed(seed + i) for i in range(n)]
    finetune_experts(experts, obs[:, None], torch.arange(n), gens, max(steps), lr, length - 1, on_step=on_step)
    return snaps


def run(ctx: Context, task: Task) -> dict[str, Adapted]:
    steps = STEPS
    snaps = finetune_on_prefix(
        ctx.zoo.config, ctx.zoo.base_state_dict(), task.obs.to(ctx.device), steps, ctx.budget.prefix_lr, ctx.seed
    )
    out = {}
    for k, (weights, seconds) in snaps.items():
        out[f"prefix_finetune_{k}"] = adapted_experts(batched(ctx.zoo.config, weights).to(ctx.device), seconds, steps=k)
    return out
