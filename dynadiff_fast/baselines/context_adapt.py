"""Context adaptation (meta-learning, CoDA-style; Kirchmeyer et al., 2022): environment-shared weights θ and
a linear hypernetwork W map a low-dimensional context ξ_e to an environment's weights,

    θ_e = θ + W ξ_e,     ξ_e ∈ R^d  (d = ``budget.context_dim``),

learned jointly on the seen environments (θ from the pooled base model; W small random; ξ_e = 0; loss:
one-step MSE + λ |ξ_e|^2). A new environment keeps θ and W and adapts only its context, by
``budget.context_steps`` Adam steps on its observed frames. Every environment's experts are one
``BatchedFNO.from_stacked`` over ``θ + W ξ`` (autograd reaches θ, W and ξ).
"""

from __future__ import annotations

import torch

from dynadiff_fast.baselines.common import Adapted, Context, Timer, adapted_experts, batched
from dynadiff_fast.eval.protocol import Task
from dynadiff_fast.state_dict import Stacked

NAMES = ("context_adapt",)
CONTEXT_L2 = 1e-4  # λ, CoDA's context-norm penalty
CONTEXT_LR = 1e-2  # contexts are few, low-dimensional numbers: a larger step than the weights'


def contextual(cfg, theta: Stacked, hyper: Stacked, xi: torch.Tensor):
    """``BatchedFNO`` of ``len(xi)`` experts with weights ``θ + W ξ_e`` (differentiable in all three)."""
    from dynadiff_fast.experts.stacked import experts_type

    w = {k: theta[k][None] + torch.einsum("ed,d...->e...", xi.to(hyper[k].dtype), hyper[k]) for k in theta}
    return experts_type(cfg).from_stacked(cfg, w)


def _pair_loss(experts, data: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Sum over experts of each one's mean one-step error on its own pairs ``idx [E, b]`` of ``data [E, n, T+1, ...]``."""
    steps = data.shape[2] - 1
    rows = torch.arange(data.shape[0], device=data.device)[:, None]
    traj, t = idx // steps, idx % steps
    pred = experts(data[rows, traj, t])
    return (pred - data[rows, traj, t + 1]).square().flatten(1).mean(1).sum()


def meta_train(ctx: Context) -> tuple[Stacked, Stacked, float]:
    """Learn θ and W on the seen environments; returns them (detached) and the seconds."""
    b = ctx.budget
    gen = ctx.generator(11)
    with Timer() as t:
        seen = torch.as_tensor(ctx.ds.split["seen"]).tolist()
        data = ctx.ds.train(seen).to(ctx.device)
        theta = {k: v.detach().clone().to(ctx.device).requires_grad_() for k, v in ctx.zoo.base_state_dict().items()}
        hyper = {}
        for k, v in theta.items():
            scale = 1e-2 * float(v.detach().abs().pow(2).mean().sqrt()) + 1e-6
            noise = torch.randn((b.context_dim, *v.shape), generator=gen, dtype=v.dtype)
            hyper[k] = (scale * noise).to(ctx.device).requires_grad_()
        xi = torch.zeros(len(seen), b.context_dim, device=ctx.device, requires_grad=True)
        opt = torch.optim.Adam(
            [{"params": [*theta.values(), *hyper.values()], "lr": b.lr}, {"params": [xi], "lr": CONTEXT_LR}]
        )
        n_pairs = data.shape[1] * (data.shape[2] - 1)
        for _ in range(b.context_epochs):
            perm = torch.stack([torch.randperm(n_pairs, generator=gen) for _ in seen]).to(ctx.device)
            for i in range(0, n_pairs, b.batch_size):
                loss = _pair_loss(contextual(ctx.zoo.config, theta, hyper, xi), data, perm[:, i : i + b.batch_size])
                loss = loss + CONTEXT_L2 * xi.square().sum()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
    detach = lambda d: {k: v.detach() for k, v in d.items()}  # noqa: E731
    return detach(theta), detach(hyper), t.seconds


def adapt_contexts(cfg, theta: Stacked, hyper: Stacked, obs: torch.Tensor, steps: int) -> torch.Tensor:
    """Contexts ``[N, d]`` fitted by Adam on each environment's observed pairs (θ, W frozen)."""
    n, length = obs.shape[:2]
    d = next(iter(hyper.values())).shape[0]
    xi = torch.zeros(n, d, device=obs.device, requires_grad=True)
    opt = torch.optim.Adam([xi], lr=CONTEXT_LR)
    idx = torch.arange(length - 1, device=obs.device).expand(n, -1)
    for _ in range(steps):
        loss = _pair_loss(contextual(cfg, theta, hyper, xi), obs[:, None], idx) + CONTEXT_L2 * xi.square().sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return xi.detach()


def run(ctx: Context, task: Task) -> dict[str, Adapted]:
    theta, hyper, train_s = ctx.cached("context_adapt", lambda: meta_train(ctx))
    cfg = ctx.zoo.config
    with Timer() as t:
        xi = adapt_contexts(cfg, theta, hyper, task.obs.to(ctx.device), ctx.budget.context_steps)
        experts = batched(cfg, contextual(cfg, theta, hyper, xi).stacked()).to(ctx.device)
    return {"context_adapt": adapted_experts(experts, t.seconds, train_seconds=train_s, context=xi.tolist())}
