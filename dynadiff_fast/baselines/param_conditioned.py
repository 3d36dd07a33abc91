"""Parameter-conditioned FNO (after "Conditioning on PDE Parameters to Generalise Deep Learning Emulation",
2025): ONE model for the whole family, told the environment parameters.

Architecture: the expert FNO (same ``ExpertConfig``) with feature-wise modulation after every Fourier
block, ``h <- h * (1 + γ_l(e)) + β_l(e)``, ``(γ, β) = MLP(e)`` of the standardised parameters e (AdaLN/FiLM).
ODE experts (``MLPExpert``) get the same modulation after every hidden tanh layer of their vector field,
which is then stepped by the expert's RK4 (``ConditionedMLP``).
The MLP's last layer starts at zero, so training starts from the pooled base model exactly (the paper's
recipe: pretrain unconditioned on one domain, then learn the modulation on diverse parameters), and the
whole model is trained on every seen environment's training pairs with their true parameters.

param_conditioned_true      uses the test environment's true parameters (an oracle on the parameters).
param_conditioned_inferred  parameters fitted to the observed frames: the e minimising the conditioned
                            model's prefix error, by the same two-level grid search as CCM over the seen
                            parameter box extended by half its span (no extra regression network).
"""

from __future__ import annotations

import torch
from torch import nn

from dynadiff_fast.baselines.common import Adapted, Context, Timer, grid_search, search_box
from dynadiff_fast.eval.protocol import Task, prefix_error, rollout
from dynadiff_fast.experts.configs import MLPExpert, rk4_step

NAMES = ("param_conditioned_true", "param_conditioned_inferred")


class ConditionedFNO(nn.Module):
    """neuraloperator FNO with FiLM modulation of each block's output by environment parameters.

    forward(x [B, C, H, W], e [B, P] standardised parameters) -> [B, C_out, H, W]
    """

    def __init__(self, fno: nn.Module, n_params: int, hidden: int = 64):
        super().__init__()
        self.fno = fno
        width, self.n_layers = fno.hidden_channels, fno.n_layers
        self.film = nn.Sequential(nn.Linear(n_params, hidden), nn.GELU(), nn.Linear(hidden, 2 * self.n_layers * width))
        nn.init.zeros_(self.film[-1].weight)
        nn.init.zeros_(self.film[-1].bias)

    def forward(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        f = self.fno
        mod = self.film(e.to(x.dtype)).reshape(len(e), self.n_layers, 2, -1, *([1] * (x.dim() - 2)))
        if f.positional_embedding is not None:
            x = f.positional_embedding(x)
        x = f.lifting(x)
        for layer in range(self.n_layers):
            x = f.fno_blocks(x, layer)
            x = x * (1 + mod[:, layer, 0]) + mod[:, layer, 1]
        return f.projection(x)


class ConditionedMLP(nn.Module):
    """An ``MLPExpert`` whose vector field is FiLM-modulated after each hidden layer by environment parameters,
    ``dx/dt = f(x; e)``, stepped by the expert's RK4.

    forward(x [B, C], e [B, P] standardised parameters) -> [B, C]
    """

    def __init__(self, expert: MLPExpert, n_params: int, hidden: int = 64):
        super().__init__()
        self.expert = expert
        linears = [m for m in expert if isinstance(m, nn.Linear)]
        self.n_layers, width = len(linears) - 1, linears[0].out_features  # hidden layers, their width
        self.film = nn.Sequential(nn.Linear(n_params, hidden), nn.GELU(), nn.Linear(hidden, 2 * self.n_layers * width))
        nn.init.zeros_(self.film[-1].weight)
        nn.init.zeros_(self.film[-1].bias)

    def field(self, x: torch.Tensor, mod: torch.Tensor) -> torch.Tensor:
        layer = 0
        for m in self.expert:
            x = m(x)
            if isinstance(m, nn.Tanh):  # the output of hidden layer `layer`
                x = x * (1 + mod[:, layer, 0]) + mod[:, layer, 1]
                layer += 1
        return x

    def forward(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        mod = self.film(e.to(x.dtype)).reshape(len(e), self.n_layers, 2, -1)
        return rk4_step(lambda y: self.field(y, mod), x, self.expert.dt)


def conditioned(base: nn.Module, n_params: int) -> ConditionedFNO | ConditionedMLP:
    """The parameter-conditioned model around the zoo's base expert (an FNO or an ``MLPExpert``)."""
    return ConditionedMLP(base, n_params) if isinstance(base, MLPExpert) else ConditionedFNO(base, n_params)


def _standardise(ctx: Context) -> tuple[torch.Tensor, torch.Tensor]:
    seen = ctx.ds.params[torch.as_tensor(ctx.ds.split["seen"])]
    mean, std = seen.mean(0), seen.std(0, unbiased=False)
    return mean.float(), torch.where(std > 0, std, torch.ones_like(std)).float()


def train_conditioned(ctx: Context) -> tuple[nn.Module, float]:
    """Train the conditioned model on all seen environments' training pairs; returns it and the seconds."""
    b = ctx.budget
    with Timer() as t:
        seen = torch.as_tensor(ctx.ds.split["seen"]).tolist()
        data = ctx.ds.train(seen).to(ctx.device)  # [S, n_traj, T+1, *frame]
        mean, std = _standardise(ctx)
        e_all = ((ctx.ds.params[seen].float() - mean) / std).to(ctx.device)
        model = conditioned(ctx.zoo.base_module(), e_all.shape[1]).to(ctx.device)
        opt = torch.optim.Adam(model.parameters(), lr=b.lr)
        n_env, n_traj, t1 = data.shape[:3]
        n_pairs = n_env * n_traj * (t1 - 1)
        gen = ctx.generator(7)
        model.train()
        for _ in range(b.conditioned_epochs):
            perm = torch.randperm(n_pairs, generator=gen)
            for i in range(0, n_pairs, b.batch_size):
                idx = perm[i : i + b.batch_size]
                env, rest = idx // (n_traj * (t1 - 1)), idx % (n_traj * (t1 - 1))
                traj, step = rest // (t1 - 1), rest % (t1 - 1)
                loss = (model(data[env, traj, step], e_all[env]) - data[env, traj, step + 1]).square().mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        model.eval()
    return model, t.seconds


def conditioned_rollout(model: nn.Module, e: torch.Tensor):
    """Rollout function for environments with standardised parameters ``e [N, P]``."""

    def run(sel: slice, x0: torch.Tensor, steps: int) -> torch.Tensor:
        n, b = x0.shape[:2]
        cond = e[sel].repeat_interleave(b, dim=0)
        with torch.no_grad():
            out = rollout(lambda x: model(x, cond), x0.flatten(0, 1), steps, x0.dim() - 2)  # [n*B, T+1, ...]
        return out.reshape(n, 1, b, *out.shape[1:])

    return run


def infer_params(model: nn.Module, obs: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, points: int):
    """Standardised parameters ``[N, P]`` minimising the prefix error of ``model`` on ``obs [N, L, ...]``."""
    length = obs.shape[1]

    def paired(cands: torch.Tensor) -> torch.Tensor:  # [N, M, P] -> [N, M]
        n, m = cands.shape[:2]
        x0 = obs[:, 0].repeat_interleave(m, dim=0)
        with torch.no_grad():
            roll = rollout(lambda x: model(x, cands.flatten(0, 1).to(x.device)), x0, length - 1, obs.dim() - 2)
        return prefix_error(roll.reshape(n, m, *roll.shape[1:]), obs)

    def shared(cands: torch.Tensor) -> torch.Tensor:
        return paired(cands[None].expand(len(obs), *cands.shape))

    return grid_search(shared, paired, lo, hi, points)[0]


def run(ctx: Context, task: Task) -> dict[str, Adapted]:
    model, train_s = ctx.cached("param_conditioned", lambda: train_conditioned(ctx))
    mean, std = _standardise(ctx)
    e_true = ((task.params.float() - mean) / std).to(ctx.device)
    seen_e = (ctx.ds.params[torch.as_tensor(ctx.ds.split["seen"])].float() - mean) / std
    with Timer() as t:
        lo, hi = search_box(seen_e)
        e_fit = infer_params(model, task.obs.to(ctx.device), lo, hi, ctx.budget.search_points)
    info = {"train_seconds": train_s}
    fitted = (e_fit.cpu() * std + mean).tolist()
    return {
        "param_conditioned_true": Adapted(conditioned_rollout(model, e_true), 0.0, 1, info),
        "param_conditioned_inferred": Adapted(
            conditioned_rollout(model, e_fit.to(ctx.device)), t.seconds, 1, {**info, "inferred_params": fitted}
        ),
    }
