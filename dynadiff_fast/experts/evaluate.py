"""Rollout error of many experts at once: ``evaluate_experts``; the prefix score every method selects by.

For expert e, trajectory b and step t = 1..S (S = ``rollout_steps``) the expert rolls out
autoregressively from the true frame 0, x̂_t = f_e(x̂_{t-1}), x̂_0 = x_0, and the error is the RMSE
over channels and space of the standardised fields:

    rmse[e, b, t-1] = sqrt( mean_{c,h,w} (x̂_t[e, b] - x_t[e, b])^2 )

(FNO experts, ``BatchedFNO``, on frames ``[C, H, W]``; the Lotka–Volterra MLP experts, ``BatchedMLP``, on ODE
states ``[C]``, the mean then over channels only.)

Experts run in chunks (whole rollouts, no trajectory stored) so memory stays within a budget.

The *prefix score* (``prefix_error``, ``paired_prefix_errors``) is the one score by which every method that
selects or searches on an observation sequence ``obs [L, C, *S]`` ranks its candidates (DynaDiff's best of K,
nn_prefix, soup_prefix, CCM's coordinate, the inferred parameters): the candidate rolls out L - 1 steps from the
first observed frame, and the score is the mean squared error against the observed frames 1..L-1,

    prefix_score = mean_{t=1..L-1, c, h, w} (x̂_t - obs_t)^2,    x̂_0 = obs_0,  x̂_t = f(x̂_{t-1}).

A rollout, not a teacher-forced one-step error, because the evaluation itself is a rollout: a one-step score
ranks candidates by a quantity the protocol never measures.
"""

from __future__ import annotations

from typing import Any

import torch

from dynadiff_fast.experts.batched_fno import BatchedFNO
from dynadiff_fast.experts.batched_mlp import BatchedMLP
from dynadiff_fast.profiling import nvtx_range

# Default memory budget of one chunk (true frames + rollout state + layer activations).
MEMORY_BUDGET = 1 << 30


def _frame_spec(experts: BatchedFNO | BatchedMLP) -> tuple[int, int]:
    """(rank, channels) of the frames the experts step: [C, H, W] fields (FNO) or [C] ODE states (MLP)."""
    if isinstance(experts, BatchedMLP):
        return 1, experts.config.state_dim
    return 3, experts.config.in_channels


def _chunk_size(experts: BatchedFNO | BatchedMLP, frame_shape: tuple[int, ...], B: int, T1: int, budget: int) -> int:
    """Experts per chunk so that the chunk's frames and activations fit ``budget`` bytes (float32)."""
    cfg = experts.config
    if isinstance(experts, BatchedMLP):  # true frames [T1, C] and the RK4 stages' [hidden] activations
        per_expert = 4 * B * (T1 * frame_shape[0] + 8 * cfg.hidden)
        return max(1, min(experts.num_experts, budget // per_expert))
    c, h, w = frame_shape
    width = max(cfg.hidden_channels, cfg.lifting_channels, cfg.projection_channels, c)
    per_expert = 4 * B * h * w * (T1 * c + 8 * width)
    return max(1, min(experts.num_experts, budget // per_expert))


def _load(data: Any, sl: slice, n_experts: int, steps: int) -> torch.Tensor:
    """Frames 0..steps of experts ``sl``: [n or 1, B, steps+1, *frame] from a tensor or (dataset, envs)."""
    if isinstance(data, torch.Tensor):
        return data[:, :, : steps + 1] if data.shape[0] == 1 else data[sl, :, : steps + 1]
    dataset, envs = data
    return dataset.test(list(envs)[sl], normalized=True)[:, :, : steps + 1]


def _check(experts: BatchedFNO | BatchedMLP, data: Any, rollout_steps: int) -> tuple[int, tuple[int, ...], int]:
    """Validate; return (B, frame shape, frames available)."""
    if not isinstance(experts, (BatchedFNO, BatchedMLP)):
        raise TypeError(f"experts: expected a BatchedFNO or a BatchedMLP, got {type(experts).__name__}")
    rank, channels = _frame_spec(experts)
    dims = "C, H, W" if rank == 3 else "C"
    if not isinstance(rollout_steps, int) or rollout_steps < 1:
        raise ValueError(f"rollout_steps: expected an integer >= 1, got {rollout_steps!r}")
    E = experts.num_experts
    if isinstance(data, torch.Tensor):
        if data.dim() != 3 + rank:
            raise ValueError(f"data: expected [E or 1, B, T+1, {dims}], got shape {tuple(data.shape)}")
        n, B, T1 = data.shape[:3]
        frame = tuple(data.shape[3:])
    elif isinstance(data, (tuple, list)) and len(data) == 2 and hasattr(data[0], "test"):
        dataset, envs = data
        n = len(list(envs))
        B, T1, frame = dataset.n_traj - dataset.n_train_traj, dataset.n_frames, tuple(dataset.frame_shape)
    else:
        raise TypeError(f"data: expected a tensor [E or 1, B, T+1, {dims}] or (EnvDataset, envs), got {type(data)}")
    if n not in (1, E):
        raise ValueError(f"data: leading axis {n} must be 1 (shared) or num_experts={E}")
    if T1 < rollout_steps + 1:
        raise ValueError(f"rollout_steps: {rollout_steps} needs {rollout_steps + 1} frames, data has {T1}")
    if len(frame) != rank or frame[0] != channels:
        raise ValueError(f"data: frames {frame} do not fit experts taking [{dims}] frames with C={channels} channels")
    return B, frame, T1


def prefix_error(rollouts: torch.Tensor, obs: torch.Tensor) -> torch.Tensor:
    """Prefix score of rollouts started at ``obs[:, 0]``: their mean squared error on the observed frames 1..L-1.

    rollouts: ``[N, K, L, C, *S]`` (K candidate predictors per environment); obs: ``[N, L, C, *S]`` -> ``[N, K]``.
    """
    if rollouts.shape[0] != obs.shape[0] or rollouts.shape[2:] != obs.shape[1:]:
        raise ValueError(f"rollouts {tuple(rollouts.shape)} do not match obs {tuple(obs.shape)} as [N, K, L, ...]")
    d = rollouts[:, :, 1:] - obs[:, None, 1:]
    return d.double().square().flatten(2).mean(-1).float()


def paired_prefix_errors(experts: BatchedFNO | BatchedMLP, obs: torch.Tensor, chunk: int = 256) -> torch.Tensor:
    """Prefix score of expert ``e`` on ITS OWN observation sequence ``obs[e]`` (``obs [E, L, C, *S]``) -> ``[E]``."""
    length = obs.shape[1]
    errs = []
    with torch.no_grad():
        for start in range(0, experts.num_experts, chunk):
            idx = torch.arange(start, min(experts.num_experts, start + chunk))
            sub = experts if idx.numel() == experts.num_experts else experts.select(idx)
            roll = sub.rollout(obs[idx, :1], length - 1)  # [e, 1, L, ...]
            errs.append(prefix_error(roll, obs[idx])[:, 0])
    return torch.cat(errs)


@torch.no_grad()
def evaluate_experts(
    experts: BatchedFNO | BatchedMLP,
    data: Any,
    rollout_steps: int,
    chunk_size: int | None = None,
    *,
    reduce: str = "mean",
    memory_budget: int = MEMORY_BUDGET,
    progress: bool = True,
) -> torch.Tensor:
    """Autoregressive rollout RMSE of every expert on its data.

    Args:
        experts: E experts (``BatchedFNO``, or ``BatchedMLP`` on ODE frames ``[C]`` in place of ``[C, H, W]``).
        data: standardised true trajectories, either
            * a tensor ``[E or 1, B, T+1, C, H, W]``: frame 0 is the initial state, frames 1..T the
              truth; leading axis E gives expert e its own trajectories (e.g. its environment),
              1 shares them between all experts; or
            * ``(dataset, envs)``: an ``EnvDataset`` and a list of E (or 1) env indices; expert e is
              scored on the test trajectories of ``envs[e]``, loaded chunk by chunk.
        rollout_steps: S >= 1 steps to roll out (T >= S).
        chunk_size: experts per chunk (default: as many as fit ``memory_budget`` bytes).
        reduce: "mean" averages over the B trajectories, "none" keeps them.
        progress: tqdm bar over chunks (shown only on a terminal).
    Returns:
        float32 RMSE ``[E, S]`` (reduce="mean") or ``[E, B, S]`` (reduce="none") on the CPU;
        entry ``[..., t-1]`` is the error of step t.
    """
    from tqdm.auto import tqdm

    if reduce not in ("mean", "none"):
        raise ValueError(f"reduce: expected 'mean' or 'none', got {reduce!r}")
    B, frame, T1 = _check(experts, data, rollout_steps)
    E = experts.num_experts
    chunk = chunk_size or _chunk_size(experts, frame, B, rollout_steps + 1, memory_budget)
    if chunk < 1:
        raise ValueError(f"chunk_size: expected an integer >= 1, got {chunk_size!r}")
    if not isinstance(data, torch.Tensor) and len(list(data[1])) == 1:  # one shared env: load it once
        data = data[0].test(list(data[1]), normalized=True)[:, :, : rollout_steps + 1]
    ref = experts.stacked()["0.weight" if isinstance(experts, BatchedMLP) else "lifting.fcs.0.weight"]
    out = torch.empty(E, B, rollout_steps)
    bar = tqdm(range(0, E, chunk), desc="evaluate experts", unit="chunk", disable=None if progress else True)
    with nvtx_range("eval/evaluate_experts"):
        for e0 in bar:
            sl = slice(e0, min(e0 + chunk, E))
            sub = experts.select(sl)
            truth = _load(data, sl, E, rollout_steps).to(device=ref.device, dtype=ref.dtype)
            x = truth[:, :, 0]
            if x.shape[0] == 1:
                x = x[0]  # shared initial frames: BatchedFNO / BatchedMLP broadcast them
            for t in range(1, rollout_steps + 1):
                x = sub(x)
                err = (x - truth[:, :, t]).square().mean(dim=tuple(range(2, x.dim()))).sqrt()  # [n, B]
                out[sl, :, t - 1] = err.float().cpu()
    return out.mean(dim=1) if reduce == "mean" else out
