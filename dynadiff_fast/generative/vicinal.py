"""Vicinal training across the environment axis: rows that stand for environments between (and a little past)
the zoo's seen ones, for the weight VAE and the DiT.

The zoo covers a handful of environments, each with a few experts, so a conditional denoiser fitted to it is a
lookup table: its optimum is the empirical distribution, and for a prompt between two training environments it
returns the latents of one of them (measured on the bench Lambda-Omega zoo, 3 seeds: 90% of the generations for
unseen beta landed nearest the seen environment nearest in beta), and a VAE trained on those experts alone
decodes poorly off them (seed 0: linearly extrapolated zoo latents decoded to experts with out-of-range RMSE 0.320,
worse than the nearest seen environment's 0.302). The zoo's experts are fine-tuned from one base model, so their
weights lie on a near-linear path along the environment parameter (what CCM merges along; seed 0: the weights
interpolated at the true beta between the two bracketing seen environments give 0.194 on the unseen ones in
range, the interpolated latents decoded 0.208). A mixed row is

    w = lam w_a + (1 - lam) w_b,   prompt = lam P(obs_a) + (1 - lam) P(obs_b),   e = lam e_a + (1 - lam) e_b

for zoo expert a and a random expert b of one of the ``2 P`` environments nearest to a's (parameters scaled to
unit std; P = number of parameters), lam ~ U(-span, 1 + span): span > 0 extends the path past both ends of a
pair by span times its gap. Weight-graph tokens and their per-element normalisation are affine in the weights,
so mixing normalised tokens mixes the weights. The VAE reconstructs mixed experts (functional target: the mixed
expert's own outputs); the DiT learns the VAE latents of mixed experts under mixed prompts.
"""

from __future__ import annotations

import torch


class VicinalPairs:
    """Partner experts and mixing weights (module docstring) for batches of zoo experts.

    ``env_of [N]``: each zoo expert's environment row in ``0..M-1``; ``env_params [M, P]``: the rows' parameters.
    A fraction ``prob`` of a batch's rows are mixed; the others get partner = themselves and lam = 1.
    """

    def __init__(self, env_of: torch.Tensor, env_params: torch.Tensor, prob: float, span: float):
        M = env_params.shape[0]
        self.env_of, self.prob, self.span = env_of, prob, span
        self.neighbours = environment_neighbours(env_params, min(2 * env_params.shape[1], M - 1))
        counts = torch.bincount(env_of, minlength=M)
        self.counts = counts
        self.members = torch.zeros(M, int(counts.max()), dtype=torch.long)
        for r in range(M):
            self.members[r, : counts[r]] = (env_of == r).nonzero().flatten()

    def sample(self, idx: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Partner experts ``[B]`` and weights lam ``[B]`` for the batch's experts ``idx [B]``."""
        B = idx.numel()
        mixed = torch.rand(B, generator=g) < self.prob
        pick = torch.randint(self.neighbours.shape[1], (B,), generator=g)
        env_b = self.neighbours[self.env_of[idx], pick]
        slot = (torch.rand(B, generator=g) * self.counts[env_b]).long()
        partner = torch.where(mixed, self.members[env_b, slot], idx)
        lam = -self.span + (1 + 2 * self.span) * torch.rand(B, generator=g)
        return partner, torch.where(mixed, lam, torch.ones(B))


def environment_neighbours(env_params: torch.Tensor, k: int) -> torch.Tensor:
    """``[M, k]``: each environment's k nearest other environments, by distance in its parameters
    ``env_params [M, P]`` scaled to unit std per parameter (ties: lower index first)."""
    p = env_params.double()
    p = (p - p.mean(0)) / p.std(0, unbiased=False).clamp(min=1e-12)
    d = torch.cdist(p, p)
    d.fill_diagonal_(float("inf"))
    return d.topk(k, dim=1, largest=False, sorted=True).indices


def check(prob: float, span: float) -> None:
    """Settings check (a one-line error naming the setting)."""
    if not 0 <= prob <= 1:
        raise ValueError(f"mix_prob: expected a value in [0, 1], got {prob}")
    if not 0 <= span <= 1:
        raise ValueError(f"mix_span: expected a value in [0, 1], got {span}")


def mix(a: torch.Tensor, b: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """``lam a + (1 - lam) b`` row by row: ``a, b [B, ...]``, ``lam [B]`` (rows with lam = 1 are ``a`` exactly)."""
    lam = lam.to(a.dtype).view(-1, *[1] * (a.dim() - 1))
    return lam * a + (1 - lam) * b


def zoo_vicinity(zoo, prob: float, span: float) -> VicinalPairs | None:
    """The zoo's ``VicinalPairs`` (environment rows in sorted order), or None when mixing is off or the zoo
    holds one environment."""
    envs = sorted(set(zoo.env_index.tolist()))
    if prob <= 0 or len(envs) < 2:
        return None
    env_of = torch.tensor([envs.index(int(e)) for e in zoo.env_index])
    env_params = torch.stack([zoo.params[(env_of == r).nonzero()[0, 0]] for r in range(len(envs))])
    return VicinalPairs(env_of, env_params, prob, span)
