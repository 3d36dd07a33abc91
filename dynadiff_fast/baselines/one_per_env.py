"""One-per-Env (upper reference): an expert trained on the test environment's own *training*
trajectories, which no other method may use. Trained exactly as the zoo's experts were: from the pooled
base model with the zoo build's fine-tuning epochs, learning rate and batch size (``zoo.manifest["build"]``),
by ``experts.train.finetune_experts`` (all environments at once in one ``BatchedFNO``)."""

from __future__ import annotations

import torch

from dynadiff_fast.baselines.common import Adapted, Context, Timer, adapted_experts, batched
from dynadiff_fast.eval.protocol import Task
from dynadiff_fast.state_dict import repeat_state_dict

NAMES = ("one_per_env",)


def run(ctx: Context, task: Task) -> dict[str, Adapted]:
    from dynadiff_fast.experts.train import finetune_experts

    build = ctx.zoo.manifest["build"]
    # zoos built before fine-tuning had its own learning rate used ``lr`` for both phases
    epochs, lr, batch = build["finetune_epochs"], build.get("finetune_lr", build["lr"]), build["batch_size"]
    with Timer() as t:
        data = ctx.ds.train(task.envs.tolist()).to(ctx.device)
        experts = batched(ctx.zoo.config, repeat_state_dict(ctx.zoo.base_state_dict(), task.n_env)).to(ctx.device)
        gens = [ctx.generator(1000 + int(e)) for e in task.envs]
        history = finetune_experts(experts, data, torch.arange(task.n_env), gens, epochs, lr, batch)
        experts.eval()
    final = history[-1].tolist() if len(history) else []
    return {"one_per_env": adapted_experts(experts, t.seconds, epochs=epochs, train_loss=final)}
