"""Prefix fine-tuning from several seeds (a deep ensemble of ``prefix_finetune``): per test environment K =
``n_samples`` copies of the pooled base model, each perturbed on one layer exactly as the zoo's experts are
(``experts.train.perturb_one_layer`` at the zoo build's ``noise_scale``, its own seed), then fine-tuned like
``prefix_finetune`` on the environment's L-1 observed one-step pairs (full batch, Adam at ``budget.prefix_lr``)
for ``STEPS`` steps; all N*K members in one stacked container (``experts.train.finetune_experts``). Its spread is
what the seeds leave after every member has fitted the same frames.

STEPS = 100, prefix fine-tuning's middle budget: the ensemble costs K times one ``prefix_finetune`` run, and the
1000-step run alone takes a third of the Lambda-Omega evaluate stage (336 s of 1012 s), so K = 8 at 1000 steps
would take longer than every other method together.
"""

from __future__ import annotations

import torch

from dynadiff_fast.baselines.common import Adapted, Context, Timer, adapted_experts, batched
from dynadiff_fast.eval.protocol import Task
from dynadiff_fast.state_dict import repeat_state_dict

NAMES = ("prefix_finetune_ensemble",)
STEPS = 100


def run(ctx: Context, task: Task) -> dict[str, Adapted]:
    from dynadiff_fast.experts.train import finetune_experts, perturb_one_layer

    k = ctx.n_samples
    if k < 2:
        raise ValueError(f"n_samples: prefix_finetune_ensemble needs K >= 2 members per environment, got {k}")
    noise = ctx.zoo.manifest["build"]["noise_scale"]
    obs = task.obs.to(ctx.device)
    n, length = obs.shape[:2]
    with Timer() as t:
        experts = batched(ctx.zoo.config, repeat_state_dict(ctx.zoo.base_state_dict(), n * k)).to(ctx.device)
        stacked = experts.stacked()
        gens = [ctx.generator(2000 + k * int(env) + j) for env in task.envs for j in range(k)]
        with torch.no_grad():
            for e, g in enumerate(gens):
                perturb_one_layer(stacked, e, g, noise)
        finetune_experts(experts, obs[:, None], torch.arange(n).repeat_interleave(k), gens, STEPS,
                         ctx.budget.prefix_lr, length - 1)  # fmt: skip
        experts.eval()
    return {"prefix_finetune_ensemble": adapted_experts(experts, t.seconds, k, steps=STEPS, noise_scale=noise)}
