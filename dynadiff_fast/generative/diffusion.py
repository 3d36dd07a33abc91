"""Gaussian diffusion in the weight-latent space: noise schedules, training targets and samplers.

Forward process (Ho et al., 2020; paper Sec. 2.2), for a discrete step ``n`` in ``[0, T)``:

    x_n = sqrt(abar_n) * x_0 + sqrt(1 - abar_n) * eps,        eps ~ N(0, I)

with ``abar_n = prod_{m<=n} (1 - beta_m)`` decreasing from ~1 (``n = 0``, almost clean) towards 0.

Parameterisations of the network output (``prediction``):
    ``"eps"``: the noise ``eps``;
    ``"v"``:   the velocity ``v = sqrt(abar) * eps - sqrt(1 - abar) * x_0`` (Salimans & Ho, 2022), which keeps
               the target's scale constant over ``n`` and behaves better at the noisy end of a cosine schedule.
Either is converted to ``(x0_hat, eps_hat)`` by ``split_prediction``.

Samplers walk a strided subsequence ``tau_0 > ... > tau_{S-1}`` of the ``T`` training steps:
    DDIM (Song et al., 2021), one step tau_i -> tau_{i+1} (``abar_{tau_S} := 1``):
        x' = sqrt(abar') * x0_hat + sqrt(1 - abar' - sigma^2) * eps_hat + sigma * z
        sigma = eta * sqrt((1 - abar') / (1 - abar)) * sqrt(1 - abar / abar')
    ``eta = 0`` is the deterministic DDIM sampler; ``eta = 1`` makes ``sigma^2`` the posterior variance of the
    re-spaced Markov chain, i.e. ancestral DDPM sampling on the strided steps (Nichol & Dhariwal, 2021).
Classifier-free guidance (Ho & Salimans, 2022) is the model function's job (see ``guided``): samplers only see a
function ``model(x_n, n) -> prediction``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from dynadiff_fast.profiling import nvtx_range

SCHEDULES = ("cosine", "linear")
PREDICTIONS = ("eps", "v")
SAMPLERS = ("ddim", "ddpm")

ModelFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


# ----------------------------------------------------------------------------------------------------------------
# Schedules
# ----------------------------------------------------------------------------------------------------------------
def linear_betas(T: int, beta_start: float = 1e-4, beta_end: float = 0.02, max_beta: float = 0.999) -> torch.Tensor:
    """DDPM's linear schedule, rescaled so any ``T`` spans about the same total noise as ``T = 1000``
    (clipped at ``max_beta`` for very short chains). -> ``[T]`` fp64."""
    scale = 1000.0 / T
    return torch.linspace(beta_start * scale, beta_end * scale, T, dtype=torch.float64).clamp(max=max_beta)


def cosine_betas(T: int, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """Cosine schedule (Nichol & Dhariwal, 2021): ``abar(t) = f(t) / f(0)``, ``f(t) = cos^2((t/T + s)/(1 + s) pi/2)``.
    Betas are clipped at ``max_beta`` so the last step stays invertible. -> ``[T]`` fp64."""
    t = torch.arange(T + 1, dtype=torch.float64) / T
    f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
    abar = f / f[0]
    return (1 - abar[1:] / abar[:-1]).clamp(max=max_beta)


@dataclass(frozen=True)
class Schedule:
    """A discrete noise schedule. ``betas``/``alphas_cumprod``: ``[T]`` float64 (cast where used)."""

    kind: str
    betas: torch.Tensor
    alphas_cumprod: torch.Tensor

    @classmethod
    def make(cls, kind: str = "cosine", T: int = 1000) -> Schedule:
        if kind not in SCHEDULES:
            raise ValueError(f"schedule: kind must be one of {SCHEDULES}, got {kind!r}")
        if not isinstance(T, int) or T < 2:
            raise ValueError(f"schedule: T (number of diffusion steps) must be an int >= 2, got {T!r}")
        betas = cosine_betas(T) if kind == "cosine" else linear_betas(T)
        return cls(kind, betas, torch.cumprod(1 - betas, 0))

    @property
    def T(self) -> int:
        return self.betas.numel()

    def abar(self, n: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """``abar_n`` for integer steps ``n [B]``, shaped ``[B, 1, ..., 1]`` to broadcast against ``like [B, ...]``."""
        a = self.alphas_cumprod.to(like.device)[n].to(like.dtype)
        return a.view(-1, *([1] * (like.dim() - 1)))

    def timesteps(self, steps: int) -> torch.Tensor:
        """``steps`` evenly strided training steps, descending, always ending at step 0. -> int64 ``[steps]``."""
        if not isinstance(steps, int) or not 1 <= steps <= self.T:
            raise ValueError(f"steps: must be an int in [1, {self.T}] (the training steps T), got {steps!r}")
        # Evenly spaced over [0, T-1] including both ends ("trailing" spacing would skip the noisiest step).
        return torch.linspace(self.T - 1, 0, steps, dtype=torch.float64).round().long()


# ----------------------------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------------------------
def q_sample(schedule: Schedule, x0: torch.Tensor, n: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """Noised sample ``x_n = sqrt(abar_n) x0 + sqrt(1 - abar_n) eps``; ``x0, eps [B, ...]``, ``n [B]``."""
    a = schedule.abar(n, x0)
    return a.sqrt() * x0 + (1 - a).sqrt() * eps


def training_target(
    schedule: Schedule, x0: torch.Tensor, n: torch.Tensor, eps: torch.Tensor, prediction: str
) -> torch.Tensor:
    """What the network regresses for ``prediction`` ("eps": ``eps``; "v": ``sqrt(abar) eps - sqrt(1-abar) x0``)."""
    if prediction == "eps":
        return eps
    if prediction == "v":
        a = schedule.abar(n, x0)
        return a.sqrt() * eps - (1 - a).sqrt() * x0
    raise ValueError(f"prediction: must be one of {PREDICTIONS}, got {prediction!r}")


def split_prediction(
    schedule: Schedule, x_n: torch.Tensor, n: torch.Tensor, out: torch.Tensor, prediction: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Network output -> ``(x0_hat, eps_hat)`` at noised sample ``x_n`` and steps ``n [B]``."""
    a = schedule.abar(n, x_n)
    sa, s1a = a.sqrt(), (1 - a).sqrt()
    if prediction == "eps":
        return (x_n - s1a * out) / sa, out
    if prediction == "v":
        return sa * x_n - s1a * out, s1a * x_n + sa * out
    raise ValueError(f"prediction: must be one of {PREDICTIONS}, got {prediction!r}")


# ----------------------------------------------------------------------------------------------------------------
# Sampling
# ----------------------------------------------------------------------------------------------------------------
def guided(cond: ModelFn, uncond: ModelFn, scale: float) -> ModelFn:
    """Classifier-free guidance: ``out = uncond + scale * (cond - uncond)`` (``scale = 1``: plain conditional).
    Linear in the output, so it is valid for both the eps and the v parameterisation."""

    def model(x: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        u = uncond(x, n)
        return u + scale * (cond(x, n) - u)

    return model


@torch.no_grad()
def sample(
    model: ModelFn,
    noise: torch.Tensor,
    schedule: Schedule,
    steps: int = 50,
    method: str = "ddim",
    prediction: str = "eps",
    eta: float | None = None,
    generator: torch.Generator | None = None,
    clip_x0: float | None = None,
) -> torch.Tensor:
    """Run the reverse process from ``noise [B, ...]`` (the sample at the noisiest step) to ``x_0 [B, ...]``.

    Args:
        model: ``model(x_n [B, ...], n int64 [B]) -> prediction [B, ...]`` (eps or v, see ``prediction``).
        steps: number of network evaluations (strided over the ``T`` training steps).
        method: "ddim" (``eta`` defaults to 0, deterministic) or "ddpm" (``eta`` defaults to 1, ancestral).
        generator: seeds the fresh noise of stochastic steps (eta > 0).
        clip_x0: clamp ``x0_hat`` to ``[-clip_x0, clip_x0]`` each step (None: no clamp).
    """
    if method not in SAMPLERS:
        raise ValueError(f"method: must be one of {SAMPLERS}, got {method!r}")
    if prediction not in PREDICTIONS:
        raise ValueError(f"prediction: must be one of {PREDICTIONS}, got {prediction!r}")
    eta = (0.0 if method == "ddim" else 1.0) if eta is None else float(eta)
    if eta < 0:
        raise ValueError(f"eta: must be >= 0, got {eta}")
    ts = schedule.timesteps(steps)
    abar = schedule.alphas_cumprod
    x = noise
    for i, t in enumerate(ts.tolist()):
        with nvtx_range("dit/sample_step"):
            n = torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)
            x0, eps = split_prediction(schedule, x, n, model(x, n), prediction)
            if clip_x0 is not None:
                x0 = x0.clamp(-clip_x0, clip_x0)
            a = float(abar[t])
            a_next = float(abar[ts[i + 1]]) if i + 1 < len(ts) else 1.0
            sigma = eta * math.sqrt((1 - a_next) / (1 - a) * (1 - a / a_next)) if eta > 0 else 0.0
            x = math.sqrt(a_next) * x0 + math.sqrt(max(1 - a_next - sigma**2, 0.0)) * eps
            if sigma > 0:
                dev = generator.device if generator is not None else x.device
                z = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=dev).to(x.device)
                x = x + sigma * z
    return x
