"""What every method shares: the evaluation context, the adapted-predictor record, and weight-space helpers.

A method is a function ``run(ctx, task) -> {result_key: Adapted}``: given the observation sequences of a
``Task`` (``eval.protocol``; never the test trajectories' future), it builds one predictor per test
environment (or K of them), and reports the wall-clock that adaptation took. Training that does not
depend on the test environments (a parameter-conditioned FNO, a meta-learned context model) is done
once per context through ``ctx.cached`` and shared by both domains.

Weights travel as stacked state dicts ``{state-dict key: Tensor[E, ...]}`` (``BatchedFNO.stacked()``, or
``BatchedMLP.stacked()`` for the ODE experts); weight arithmetic (soups, merges) is done there, in
float32/complex64, then wrapped back into the experts' container (``weightspace.stacked.experts_type``).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from dynadiff_fast.config import preset_of
from dynadiff_fast.experts.evaluate import paired_prefix_errors, prefix_error  # noqa: F401  (re-exported)
from dynadiff_fast.generative.dynadiff import N_SAMPLES
from dynadiff_fast.state_dict import Stacked


@dataclass(frozen=True)
class Budget:
    """Training budgets of the baselines that train (per preset; see ``budget_for``). One-per-Env is not
    here: it uses the zoo build's own fine-tuning settings.

    conditioned_epochs: epochs of the parameter-conditioned FNO over all seen training pairs.
    context_epochs / context_dim / context_steps: CoDA-style meta-training epochs, context size, and
        the Adam steps that adapt a new environment's context on its observed frames.
    lr: Adam learning rate of every training loop here; batch_size: pairs per minibatch.
    prefix_lr: Adam learning rate of prefix fine-tuning. It starts from the trained base and sees only the
        L - 1 observed pairs, so it takes the paper's fine-tuning rate (1e-4): at 1e-3 the 1000-step run
        over-fits the observed pairs and its rollout diverges (RMSE 2.4 on the tiny Kolmogorov demo).
    search_points: grid points per coordinate of the coordinate searches (CCM's α, inferred parameters).
    """

    conditioned_epochs: int = 20
    context_epochs: int = 20
    context_dim: int = 4
    context_steps: int = 100
    lr: float = 1e-3
    prefix_lr: float = 1e-4
    batch_size: int = 16
    search_points: int = 41


BUDGETS: dict[str, Budget] = {
    "tiny": Budget(conditioned_epochs=4, context_epochs=4, search_points=21),
    "bench": Budget(conditioned_epochs=4, context_epochs=4, search_points=21),
    "small": Budget(),
    "paper": Budget(conditioned_epochs=100, context_epochs=100, lr=1e-4, batch_size=32),
}


def budget_for(preset: str, overrides: dict[str, Any] | None = None) -> Budget:
    """The preset's budget with ``overrides`` (Budget fields, e.g. ``{"search_points": 7}``) replacing fields."""
    return preset_of(BUDGETS, preset, overrides, "budget")


@dataclass
class Context:
    """Everything methods may use: the dataset (training trajectories of the seen environments; of a test
    environment only through a ``Task``), the zoo, an optional DynaDiff run, budgets and a seed."""

    ds: Any  # dynadiff_fast.data.EnvDataset
    zoo: Any  # dynadiff_fast.experts.zoo.Zoo
    run_dir: Any = None  # DynaDiff run folder (DynaDiff.load), None when absent
    budget: Budget = field(default_factory=Budget)
    seed: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    n_samples: int = N_SAMPLES  # DynaDiff candidates K per environment
    keys: set[str] | None = None  # result keys asked for (None: all); a method may skip the others
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)

    def cached(self, key: str, build: Callable[[], Any]) -> Any:
        """``build()`` once per context (e.g. a model trained on the seen environments)."""
        if key not in self._cache:
            self._cache[key] = build()
        return self._cache[key]

    def generator(self, salt: int = 0) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed * 1_000_003 + salt)


RolloutFn = Callable[[slice, torch.Tensor, int], torch.Tensor]


@dataclass
class Adapted:
    """A method's predictors for the environments of one task.

    rollout(sel, x0, steps): environments ``sel`` (a slice of the task's env positions), their initial
    frames ``[n, B, C, *S]`` -> ``[n, K, B, steps+1, C, *S]``.
    seconds: wall-clock of the adaptation (all environments of the task together; training shared
    across tasks is not included and is reported in ``info``).
    """

    rollout: RolloutFn
    seconds: float
    k: int = 1
    info: dict[str, Any] = field(default_factory=dict)


class Timer:
    """``with Timer() as t: ...; t.seconds``"""

    def __enter__(self) -> Timer:
        self._t0 = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self._t0


# ---- experts ---------------------------------------------------------------------------------------
def batched(cfg, stacked: Stacked):
    """A ``BatchedFNO`` / ``BatchedMLP`` (eval mode, its own trainable parameters) holding ``stacked`` weights
    ``{key: [E, ...]}``."""
    from dynadiff_fast.experts.stacked import experts_type

    return experts_type(cfg)(cfg, {k: v.detach().clone() for k, v in stacked.items()}).eval()


def expert_rollout(experts, k: int = 1) -> RolloutFn:
    """Rollout function of a stacked-experts container holding ``n_env * k`` experts, environment-major
    (expert ``i * k + j`` is predictor j of environment i): the environments' n*k experts in one batched call
    (``experts.ensemble.rollout_ensemble``)."""
    from dynadiff_fast.experts.ensemble import rollout_ensemble

    def run(sel: slice, x0: torch.Tensor, steps: int) -> torch.Tensor:
        n = x0.shape[0]
        idx = torch.arange(sel.start * k, (sel.start + n) * k)
        return rollout_ensemble(experts if idx.numel() == experts.num_experts else experts.select(idx), x0, steps)

    return run


def shared_rollout(expert) -> RolloutFn:
    """Rollout function of a stacked-experts container holding ONE expert used for every environment."""

    def run(sel: slice, x0: torch.Tensor, steps: int) -> torch.Tensor:
        n, b = x0.shape[:2]
        with torch.no_grad():
            out = expert.rollout(x0.flatten(0, 1), steps)  # [1, n*B, T+1, ...]
        return out.reshape(n, 1, b, *out.shape[2:])

    return run


def adapted_experts(experts, seconds: float, k: int = 1, **info: Any) -> Adapted:
    return Adapted(expert_rollout(experts, k), seconds, k, info)


def combine(stacked: Stacked, weights: torch.Tensor) -> Stacked:
    """Weighted sums of experts: ``out[m] = sum_e weights[m, e] * stacked[e]`` (weights ``[M, E]``).

    Rows summing to one give weight soups; rows with negative entries give weight arithmetic (merges).
    """
    out = {}
    for key, v in stacked.items():
        out[key] = torch.einsum("me,e...->m...", weights.to(v.device, v.dtype), v)
    return out


def prefix_rollout_errors(experts, obs: torch.Tensor, chunk: int = 256) -> torch.Tensor:
    """Prefix error (``protocol.prefix_error``) of *every* expert of ``experts`` (E of them) on every
    environment's observation sequence ``obs [N, L, C, *S]`` -> ``[N, E]``.

    Each expert is rolled out from ``obs[:, 0]`` (all N initial frames as its batch) for L-1 steps.
    """
    n, length = obs.shape[:2]
    errs = []
    with torch.no_grad():
        for start in range(0, experts.num_experts, chunk):
            idx = torch.arange(start, min(experts.num_experts, start + chunk))
            sub = experts if idx.numel() == experts.num_experts else experts.select(idx)
            roll = sub.rollout(obs[:, 0], length - 1)  # [e, N, L, ...]
            errs.append(prefix_error(roll.transpose(0, 1), obs))  # [N, e]
    return torch.cat(errs, dim=1)


# ---- coordinate search -------------------------------------------------------------------------------
def grid(lo: torch.Tensor, hi: torch.Tensor, points: int) -> torch.Tensor:
    """All points of the regular grid over the box ``[lo, hi]`` (``[D]`` each), ``points`` per axis -> ``[points^D, D]``."""
    axes = [torch.linspace(float(a), float(b), points).tolist() for a, b in zip(lo, hi, strict=True)]
    return torch.tensor(list(itertools.product(*axes)), dtype=torch.float32)


def grid_search(
    shared: Callable[[torch.Tensor], torch.Tensor],
    paired: Callable[[torch.Tensor], torch.Tensor],
    lo: torch.Tensor,
    hi: torch.Tensor,
    points: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Two-level grid search of a coordinate per environment.

    shared(cands [M, D]) -> errors [N, M] (every candidate on every environment);
    paired(cands [N, M, D]) -> errors [N, M] (environment n's own candidates).
    A grid of ``points`` per axis over the box, then a grid of the same size one cell either side of each
    environment's best point. Returns the best coordinates ``[N, D]`` and their errors ``[N]``.
    """
    if points < 2:
        raise ValueError(f"points: expected >= 2 grid points per axis, got {points}")
    cands = grid(lo, hi, points)
    best = cands[shared(cands).cpu().argmin(1)]
    cell = (hi - lo) / (points - 1)
    fine = torch.stack([grid(b - cell, b + cell, points) for b in best])  # [N, M2, D]
    errs = paired(fine).cpu()
    pick = errs.argmin(1)
    rows = torch.arange(len(best))
    return fine[rows, pick], errs[rows, pick]


def search_box(coords: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The box of ``coords [M, D]`` extended by half its span on each side (room to extrapolate)."""
    lo, hi = coords.min(0).values.float(), coords.max(0).values.float()
    span = (hi - lo).clamp_min(1e-6)
    return lo - span / 2, hi + span / 2
