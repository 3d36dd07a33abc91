"""One-for-All: the pooled pretrained FNO (the zoo's base model, trained on every seen environment),
used unchanged for every test environment. No adaptation."""

from __future__ import annotations

from dynadiff_fast.baselines.common import Adapted, Context, batched, shared_rollout
from dynadiff_fast.eval.protocol import Task
from dynadiff_fast.state_dict import repeat_state_dict

NAMES = ("base",)


def run(ctx: Context, task: Task) -> dict[str, Adapted]:
    expert = batched(ctx.zoo.config, repeat_state_dict(ctx.zoo.base_state_dict(), 1)).to(ctx.device)
    return {"base": Adapted(shared_rollout(expert), 0.0, 1, {})}
