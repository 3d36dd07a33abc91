"""Calibration-Conditioned Merge (CCM; "Discovering Physical Directions in Weight Space", 2026).

From the family anchor θ0 (the pooled base model every zoo expert was fine-tuned from), expert updates
Δ_i = θ_i - θ0 split into a shared adaptation Δ+ and signed physical direction(s) Δ-; a new environment gets
ONE merged checkpoint

    θ(α) = θ0 + Δ+ + Σ_d α_d Δ-_d,

its coordinate α chosen by the prefix error on the observed frames (CCM-Prefix: no parameter metadata).

endpoint variant (one environment parameter, the paper's construction): the zoo experts of the lowest- and
    highest-parameter seen environments (averaged when there are several per environment) are the
    endpoints; Δ+ = (Δ_hi + Δ_lo) / 2, Δ- = (Δ_hi - Δ_lo) / 2, so α = -1 / +1 recover the endpoints.
principal variant (P >= 2 parameters, e.g. Navier–Stokes (A, s), cylinder flow (Re, r)): no single
    endpoint pair spans the family, so, over the seen environments' mean updates Δ_e, Δ+ = mean_e Δ_e and
    Δ-_d are the top-P principal directions of the centred Δ_e, scaled so the environments' coordinates
    have unit variance.

Search (``common.grid_search``): a grid of ``search_points`` per coordinate over the zoo's coordinate range
extended by half its span on each side (CCM's gains are largest in extrapolation), then a grid of the same
size one cell either side of the best point.
"""

from __future__ import annotations

import torch

from dynadiff_fast.baselines.common import (
    Adapted,
    Context,
    Stacked,
    Timer,
    adapted_experts,
    batched,
    combine,
    grid_search,
    paired_prefix_errors,
    prefix_rollout_errors,
    search_box,
)
from dynadiff_fast.eval.protocol import Task

NAMES = ("ccm",)


def _flat(stacked: Stacked) -> torch.Tensor:
    """``{key: [E, ...]}`` -> real float32 ``[E, n_params]`` (complex tensors as (real, imag) pairs)."""
    parts = [torch.view_as_real(v) if v.is_complex() else v for v in stacked.values()]
    return torch.cat([p.reshape(p.shape[0], -1).float() for p in parts], dim=1)


def _unflat(flat: torch.Tensor, like: Stacked) -> Stacked:
    out, i = {}, 0
    for key, v in like.items():
        real_shape = (*v.shape[1:], 2) if v.is_complex() else v.shape[1:]
        n = int(torch.Size(real_shape).numel())
        chunk = flat[:, i : i + n].reshape(flat.shape[0], *real_shape)
        chunk = chunk.to(v.real.dtype if v.is_complex() else v.dtype).contiguous()
        out[key] = torch.view_as_complex(chunk) if v.is_complex() else chunk
        i += n
    return out


def endpoint_basis(anchor: Stacked, low: Stacked, high: Stacked) -> tuple[Stacked, torch.Tensor]:
    """Basis ``[θ0 + Δ+, Δ-]`` (stack of 2) and the endpoints' coordinates ``[[-1], [1]]``."""
    d_lo = {k: low[k].mean(0) - anchor[k][0] for k in anchor}
    d_hi = {k: high[k].mean(0) - anchor[k][0] for k in anchor}
    basis = {k: torch.stack([anchor[k][0] + (d_hi[k] + d_lo[k]) / 2, (d_hi[k] - d_lo[k]) / 2]) for k in anchor}
    return basis, torch.tensor([[-1.0], [1.0]])


def principal_basis(anchor: Stacked, zoo: Stacked, n_dirs: int) -> tuple[Stacked, torch.Tensor]:
    """Basis ``[θ0 + Δ+, Δ-_1..Δ-_D]`` from the principal directions of the updates ``zoo - anchor`` (one row
    per environment: pass per-environment means), and the rows' coordinates ``[M, D]`` (unit variance).

    The directions come from the M x M Gram matrix of the centred updates (M environments << parameters):
    with ``G = U Λ U^T``, direction d is ``U[:, d]^T (Δ - Δ+) / sqrt(M)`` and row m's coordinate
    ``sqrt(M) U[m, d]``, so ``Δ_m = Δ+ + Σ_d coord[m, d] dir_d`` exactly when D spans the updates.
    """
    anchor = {k: anchor[k] for k in zoo}  # one key order for both flattenings (a loaded base is sorted by key)
    delta = _flat(zoo) - _flat(anchor)  # [M, n_params]
    m = delta.shape[0]
    if m < 2:
        raise ValueError(f"ccm: the principal variant needs >= 2 environments in the zoo, got {m}")
    n_dirs = min(n_dirs, m - 1)
    plus = delta.mean(0, keepdim=True)
    centred = delta - plus
    gram = centred.double() @ centred.double().T
    evals, evecs = torch.linalg.eigh(gram)
    u = evecs[:, evals.argsort(descending=True)[:n_dirs]]  # [M, D]
    dirs = (u.T @ centred.double()) / m**0.5
    flat = torch.cat([_flat(anchor) + plus, dirs.float()])
    return _unflat(flat, anchor), (u * m**0.5).float()


def search_alpha(
    cfg, basis: Stacked, coords: torch.Tensor, obs: torch.Tensor, points: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per environment, the coordinate ``α [N, D]`` minimising the prefix error of θ(α) on ``obs [N, L, ...]``,
    and that error ``[N]``. basis: ``[θ0 + Δ+, Δ-_1..Δ-_D]``; coords: the zoo's coordinates ``[M, D]``."""

    def merged(alpha: torch.Tensor):  # [M, D] -> BatchedFNO of M merges
        weights = torch.cat([torch.ones(len(alpha), 1), alpha], dim=1)
        return batched(cfg, combine(basis, weights)).to(obs.device)

    def shared(cands: torch.Tensor) -> torch.Tensor:
        return prefix_rollout_errors(merged(cands), obs)

    def paired(cands: torch.Tensor) -> torch.Tensor:
        n, m = cands.shape[:2]
        errs = paired_prefix_errors(merged(cands.flatten(0, 1)), obs.repeat_interleave(m, dim=0))
        return errs.reshape(n, m)

    lo, hi = search_box(coords)
    return grid_search(shared, paired, lo, hi, points)


def ccm_basis(ctx: Context) -> tuple[Stacked, torch.Tensor, str]:
    """The CCM basis of the context's zoo: endpoint variant for one parameter, principal otherwise."""
    zoo = ctx.zoo
    anchor = {k: v[None] for k, v in zoo.base_state_dict().items()}
    stacked = ctx.cached("zoo_experts", lambda: zoo.batched().to(ctx.device)).stacked()
    stacked = {k: v.detach().cpu() for k, v in stacked.items()}
    if zoo.params.shape[1] == 1:
        p = zoo.params[:, 0]
        low, high = (p == p.min()).nonzero()[:, 0], (p == p.max()).nonzero()[:, 0]
        basis, coords = endpoint_basis(
            anchor, {k: v[low] for k, v in stacked.items()}, {k: v[high] for k, v in stacked.items()}
        )
        return basis, coords, "endpoint"
    envs = zoo.env_index.unique()
    means = {k: torch.stack([v[zoo.env_index == e].mean(0) for e in envs]) for k, v in stacked.items()}
    basis, coords = principal_basis(anchor, means, zoo.params.shape[1])
    return basis, coords, "principal"


def run(ctx: Context, task: Task) -> dict[str, Adapted]:
    basis, coords, variant = ctx.cached("ccm_basis", lambda: ccm_basis(ctx))
    with Timer() as t:
        alpha, _ = search_alpha(ctx.zoo.config, basis, coords, task.obs.to(ctx.device), ctx.budget.search_points)
        weights = torch.cat([torch.ones(len(alpha), 1), alpha], dim=1)
        merged = batched(ctx.zoo.config, combine(basis, weights)).to(ctx.device)
    return {"ccm": adapted_experts(merged, t.seconds, variant=variant, alpha=alpha.tolist())}
