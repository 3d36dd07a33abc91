"""Building the zoo's weights (paper Sec. 3.2, App. C): pretrain one base FNO on every seen environment,
then fine-tune many experts per environment from it, all at once.

Data: standardised trajectories ``[n_env, n_traj, T+1, C, H, W]`` (frame 0 = initial state). A training
sample is a one-step pair ``(x_t, x_{t+1})`` addressed by ``(env, traj, t)``; minibatches are gathered from
the trajectory tensor by index, so pairs are never materialised (a paper-size dataset stays one copy).

Pretraining: one neuraloperator FNO, Adam, loss ``mean (f(x_t) - x_{t+1})^2`` over pairs of all seen
environments. Under torchrun every rank walks the same permutation, takes its slice of each global
minibatch and averages gradients (plain data parallelism), so all ranks hold the same base model.

Domain-adaptive fine-tuning: E experts stacked in one ``BatchedFNO``. Expert ``e`` starts from the base
with small noise added to one layer (``perturb_one_layer``) and sees only its own environment's pairs,
in its own order (its own generator). The loss is the SUM over experts of each expert's mean squared
error, so the gradient w.r.t. expert ``e``'s weights is exactly the gradient of its own loss, and since
Adam is elementwise, one Adam step on the stack is E independent Adam steps: the experts are those that
one-at-a-time fine-tuning would produce (to float rounding), at a fraction of the cost (bench/bench_zoo.py).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence

import torch

from dynadiff_fast.dist import DistInfo, all_reduce_mean_
from dynadiff_fast.profiling import annotate, nvtx_range

SINGLE_PROCESS = DistInfo()

# Per-expert noise layer: chosen uniformly among the FNO's weight tensors (lifting, spectral, skip,
# channel-MLP and projection weights; biases and the soft-gating skips excluded). A "layer" in the
# paper's sense is one such tensor, e.g. ``fno_blocks.convs.3.weight.tensor``.
_NOT_A_LAYER = ("bias", "channel_mlp_skips")


def expert_seed(seed: int, env: int, k: int) -> int:
    """A 63-bit seed for expert ``k`` of dataset environment ``env``: independent of how the experts are
    grouped, chunked or spread over ranks, so a zoo is reproducible whatever ``--envs-per-step`` is."""
    digest = hashlib.sha256(f"dynadiff-zoo/{seed}/{env}/{k}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def noise_layers(state: dict[str, torch.Tensor]) -> list[str]:
    """Names of the tensors that may receive the fine-tuning noise (sorted, so choices are reproducible)."""
    return sorted(k for k, v in state.items() if isinstance(v, torch.Tensor) and not any(s in k for s in _NOT_A_LAYER))


def perturb_one_layer(
    stacked: dict[str, torch.Tensor], e: int, generator: torch.Generator, scale: float
) -> tuple[str, float]:
    """Add ``N(0, sigma^2)`` noise, in place, to one randomly chosen layer of expert ``e``.

    stacked: ``{name: [E, *shape]}`` (complex spectral weights stay complex: real and imaginary parts each
    get variance ``sigma^2 / 2``). The layer is drawn uniformly from ``noise_layers``; the noise is relative
    to the layer's size, ``sigma = scale * rms(W)``, so every layer is perturbed by the same fraction.
    Returns ``(layer name, sigma)``.
    """
    if scale < 0 or not math.isfinite(scale):
        raise ValueError(f"noise_scale: expected a finite value >= 0, got {scale}")
    names = noise_layers(stacked)
    name = names[int(torch.randint(len(names), (1,), generator=generator))]
    w = stacked[name][e]
    sigma = scale * float(w.abs().square().mean().sqrt())
    noise = torch.randn(w.shape, generator=generator, dtype=w.dtype, device="cpu").to(w.device)
    with torch.no_grad():
        w.add_(noise, alpha=sigma)
    return name, sigma


def _check_trajectories(data: torch.Tensor, name: str) -> None:
    if not isinstance(data, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(data).__name__}")
    if data.dim() < 4 or data.shape[2] < 2:
        raise ValueError(
            f"{name}: expected trajectories [n_env, n_traj, T+1 >= 2, *frame], got shape {tuple(data.shape)}"
        )


def _minibatches(n: int, batch_size: int) -> list[slice]:
    if batch_size < 1:
        raise ValueError(f"batch_size: expected >= 1, got {batch_size}")
    return [slice(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]


@annotate("zoo/pretrain_epoch")
def pretrain_epoch(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    data: torch.Tensor,
    batch_size: int,
    generator: torch.Generator,
    dist: DistInfo = SINGLE_PROCESS,
    on_step: Callable[[], None] | None = None,
) -> float:
    """One epoch of one-step training of ``model`` on every pair of ``data`` ``[n_env, n_traj, T+1, *frame]``.

    Every rank draws the same permutation from ``generator`` and trains on rows ``rank::world_size`` of
    each global minibatch (``dist``: this process's place under torchrun) of ``batch_size``; gradients are averaged across ranks. Returns the epoch's
    mean training loss (this rank's pairs).
    """
    _check_trajectories(data, "data")
    n_env, n_traj, t1 = data.shape[:3]
    steps = t1 - 1
    perm = torch.randperm(n_env * n_traj * steps, generator=generator)
    total, count = 0.0, 0
    model.train()
    for sl in _minibatches(len(perm), batch_size):
        idx = perm[sl][dist.rank :: dist.world_size].to(data.device)
        if len(idx) == 0:
            continue
        env, rest = idx // (n_traj * steps), idx % (n_traj * steps)
        traj, t = rest // steps, rest % steps
        x, y = data[env, traj, t], data[env, traj, t + 1]
        with nvtx_range("zoo/pretrain_step"):
            loss = (model(x) - y).square().mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            for p in model.parameters():
                if p.grad is not None:
                    all_reduce_mean_(p.grad, dist)
            optimizer.step()
        total += float(loss.detach()) * len(idx)
        count += len(idx)
        if on_step is not None:
            on_step()
    return total / max(count, 1)


@annotate("zoo/finetune")
def finetune_experts(
    experts: torch.nn.Module,
    data: torch.Tensor,
    env_of_expert: torch.Tensor | Sequence[int],
    generators: Sequence[torch.Generator],
    epochs: int,
    lr: float,
    batch_size: int,
    on_step: Callable[[], None] | None = None,
) -> torch.Tensor:
    """Fine-tune E stacked experts, each on its own environment's one-step pairs, with one Adam.

    experts: a ``BatchedFNO`` of E experts (trained in place).
    data: ``[n_env, n_traj, T+1, C, H, W]`` standardised trajectories; expert ``e`` trains on
        ``data[env_of_expert[e]]`` (several experts may share an environment; the data is not copied).
    generators: one per expert; expert ``e``'s minibatch order comes from ``generators[e]`` alone.
    Each epoch every expert visits each of its ``n_traj * T`` pairs once, in minibatches of ``batch_size``.
    Loss: ``sum_e mean_{b,c,h,w} (f_e(x_{e,b}) - y_{e,b})^2`` (sum, so each expert's gradient is its own).
    Returns the per-expert mean training loss of each epoch, ``[epochs, E]`` float64.
    """
    _check_trajectories(data, "data")
    env = torch.as_tensor(env_of_expert, dtype=torch.long)
    n_exp = len(env)
    if n_exp != len(generators):
        raise ValueError(f"generators: expected one per expert ({n_exp}), got {len(generators)}")
    if epochs < 0:
        raise ValueError(f"epochs: expected >= 0, got {epochs}")
    if n_exp and (env.min() < 0 or env.max() >= data.shape[0]):
        raise ValueError(f"env_of_expert: values must lie in [0, {data.shape[0]}), got {env.tolist()}")
    n_traj, steps = data.shape[1], data.shape[2] - 1
    n_pairs = n_traj * steps
    env_col = env.to(data.device)[:, None]
    optimizer = torch.optim.Adam(experts.parameters(), lr=lr)
    history = torch.zeros(epochs, n_exp, dtype=torch.float64)
    experts.train()
    for epoch in range(epochs):
        perm = torch.stack([torch.randperm(n_pairs, generator=g) for g in generators]).to(data.device)
        for sl in _minibatches(n_pairs, batch_size):
            idx = perm[:, sl]  # [E, b]
            traj, t = idx // steps, idx % steps
            x, y = data[env_col, traj, t], data[env_col, traj, t + 1]  # [E, b, C, H, W]
            with nvtx_range("zoo/finetune_step"):
                per_expert = (experts(x) - y).square().flatten(1).mean(1)  # [E]
                optimizer.zero_grad(set_to_none=True)
                per_expert.sum().backward()
                optimizer.step()
            history[epoch] += per_expert.detach().double().cpu() * idx.shape[1]
            if on_step is not None:
                on_step()
        history[epoch] /= n_pairs
    return history


def finetune_module(
    module: torch.nn.Module,
    data: torch.Tensor,
    env: int,
    generator: torch.Generator,
    epochs: int,
    lr: float,
    batch_size: int,
) -> torch.Tensor:
    """The reference ``finetune_experts`` is checked against (and benchmarked against): ONE
    neuraloperator module, its own Adam, the same minibatch order from ``generator``.
    Returns the per-epoch mean training loss ``[epochs]`` float64."""
    _check_trajectories(data, "data")
    n_traj, steps = data.shape[1], data.shape[2] - 1
    n_pairs = n_traj * steps
    optimizer = torch.optim.Adam(module.parameters(), lr=lr)
    history = torch.zeros(epochs, dtype=torch.float64)
    module.train()
    for epoch in range(epochs):
        perm = torch.randperm(n_pairs, generator=generator).to(data.device)
        for sl in _minibatches(n_pairs, batch_size):
            traj, t = perm[sl] // steps, perm[sl] % steps
            loss = (module(data[env, traj, t]) - data[env, traj, t + 1]).square().mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            history[epoch] += float(loss.detach()) * len(traj)
        history[epoch] /= n_pairs
    return history


def finetune_steps(n_traj: int, n_frames: int, epochs: int, batch_size: int) -> int:
    """Optimizer steps ``finetune_experts`` takes (for progress bars): epochs x ceil(pairs / batch)."""
    return epochs * math.ceil(n_traj * (n_frames - 1) / batch_size)
