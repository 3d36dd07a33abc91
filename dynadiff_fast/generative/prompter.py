"""Dynamics-informed prompter (paper Sec. 3.3, App. G): observed frames ``X_L`` -> prompt vector.

Two parallel branches over an observation sequence ``x_0 .. x_{L-1}``, each frame ``[C, H, W]`` (standardised):

Explicit (App. G.1, no parameters). Per frame, four statistics, each summed over channels:
    mean      mu_i    = sum_c mean_hw x_i[c]
    variance  var_i   = sum_c mean_hw (x_i[c] - mean_hw x_i[c])^2
    energy    E_i     = sum_c sum_hw x_i[c]^2
    enstrophy Omega_i = sum_c sum_hw |grad x_i[c]|^2     (``torch.gradient``: central differences inside,
                                                          one-sided at the edges, unit grid spacing)
and per statistic the temporal mean ``mean_i S_i`` and trend ``(S_{L-1} - S_0) / L``: 8 numbers ordered
``[mean(mu), trend(mu), mean(var), trend(var), mean(E), trend(E), mean(Omega), trend(Omega)]``.
Their scales differ by orders of magnitude (energy grows with H*W), so the prompt carries them standardised with a
mean/std fitted on training observations (``fit_normalization``) and stored as buffers in the state dict.

Implicit (App. G.2). Each frame's spectrum (real FFT over space, ``norm="forward"`` so amplitudes do not grow
with resolution), truncated to the lowest ``spectral_modes`` modes per axis (both signs on every axis except the
last, whose negative half is redundant for a real field), real and imaginary parts stacked and flattened,
standardised per feature (fitted like the explicit stats), then a GRU over frames; its last hidden state is the
implicit prompt. Truncation keeps the GRU input at ``2 * C * (2m) * m`` numbers instead of ``2 * C * H * W``.
Beyond App. G (``transfer=True``, the default; ``False`` is the paper's exact branch): each GRU step also gets the
per-mode one-step transfer ratio ``s_t conj(s_{t-1}) / |s_{t-1}|^2``, the Fourier multiplier of the step for
mode-wise dynamics (what an FNO expert's spectral weights encode). It does not depend on the initial state, so
the prompter need not learn a product of two frames from a few trajectories (e.g. advection speed is invisible to
the explicit statistics and only in spectral phases).

Channel operator (beyond App. G, ``operator=True``): the least-squares linear one-step map between the channels
of the low-mode spectra, pooled over the observed frame pairs and modes,

    M = (sum_{t,k} s_t[:, k] s_{t-1}[:, k]^H) (sum_{t,k} s_{t-1}[:, k] s_{t-1}[:, k]^H + eps I)^(-1)    [C, C] complex

(a DMD over channels). Like the transfer ratios it does not depend on the initial state, but it is pooled, so it
is a low-noise summary with a fixed size (2 C^2 real numbers) that a linear head reads: e.g. Lambda-Omega's
rotation of (u, v) by ~beta |z|^2 dt per frame is a rotation matrix in M. It is what lets the prompt carry the
parameter of an environment never seen: on the bench Lambda-Omega zoo, a linear fit on the seen environments
predicts unseen beta with R^2 ~0.9 from M and below 0 from the App. G features (the GRU over raw spectra
memorises the few seen environments' trajectories instead). Its entries are appended to the explicit part.
With ``spectra=False`` the GRU reads only the transfer ratios (no raw, initial-state-dependent spectra).

Prompt = concat(explicit, implicit) of size ``8 (+ 2 C^2) + gru_hidden`` (``statistics=False`` drops the 8 App. G.1
numbers, leaving the operator alone in the explicit part). ``aux_head`` regresses the (standardised)
environment parameters from it: the auxiliary loss ``L_aux`` of Sec. 3.3.

Variable lengths: a batch ``[N, L, ...]`` with ``lengths [N]`` (each in ``1..L``) uses only the first
``lengths[n]`` frames of row ``n``; the GRU is causal, so its output at ``lengths[n] - 1`` is that row's final
hidden state. ODE systems (frames ``[C]``) work too: they are treated as ``[C, 1]`` fields.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

N_EXPLICIT = 8
EXPLICIT_NAMES = (
    "mean_mean",
    "mean_trend",
    "var_mean",
    "var_trend",
    "energy_mean",
    "energy_trend",
    "enstrophy_mean",
    "enstrophy_trend",
)


@dataclass(frozen=True)
class PrompterConfig:
    gru_hidden: int = field(default=64, metadata={"help": "GRU hidden size (implicit prompt length)"})
    gru_layers: int = field(default=1, metadata={"help": "stacked GRU layers"})
    spectral_modes: int = field(default=8, metadata={"help": "lowest Fourier modes kept per axis (0: all)"})
    transfer: bool = field(default=True, metadata={"help": "also feed the GRU per-mode one-step transfer ratios"})
    spectra: bool = field(default=True, metadata={"help": "feed the GRU the raw low-mode spectra (App. G.2)"})
    operator: bool = field(default=False, metadata={"help": "append the least-squares channel operator M"})
    statistics: bool = field(default=True, metadata={"help": "the App. G.1 frame statistics in the explicit part"})

    def __post_init__(self) -> None:
        if self.gru_hidden < 1 or self.gru_layers < 1 or self.spectral_modes < 0:
            raise ValueError(f"prompter: gru_hidden, gru_layers must be >= 1 and spectral_modes >= 0, got {self}")
        if not (self.spectra or self.transfer):
            raise ValueError("prompter: spectra and transfer are both off: the GRU would have no input")
        if not (self.statistics or self.operator):
            raise ValueError("prompter: statistics and operator are both off: the explicit part would be empty")


PROMPTER_PRESETS: dict[str, PrompterConfig] = {
    "tiny": PrompterConfig(gru_hidden=32, spectral_modes=6),
    # bench: initial-state-independent features only (channel operator + transfer ratios), so the prompt
    # generalises from a few seen environments (see the module docstring).
    # A 2-unit GRU: wider ones memorised the seen environments (measured: unseen prompter R^2 0.13 at 32 units,
    # 0.36 at 2; generated latents' distance to the true environment 0.69 -> 0.32 of the between-env distance).
    # Tried 2026-12-02, seed 0, statistics=False (the initial-state-dependent App. G.1 numbers dropped): the aux
    # head reads unseen beta with R^2 0.67 instead of 0.36, rollout RMSE in-domain 0.200 -> 0.194, unseen in range
    # 0.218 -> 0.210, but unseen out of range 0.207 -> 0.226: kept on, since extrapolation is the gap to CCM.
    "bench": PrompterConfig(gru_hidden=2, spectral_modes=6, spectra=False, operator=True),
    "small": PrompterConfig(gru_hidden=128, spectral_modes=8),
    "paper": PrompterConfig(gru_hidden=256, spectral_modes=8),
}


# ----------------------------------------------------------------------------------------------------------------
# Pure feature functions
# ----------------------------------------------------------------------------------------------------------------
def _as_field(x: torch.Tensor, n_spatial: int) -> torch.Tensor:
    """Frames ``[..., C, *spatial]`` with ``n_spatial`` spatial dims; ODE frames ``[..., C]`` get one of size 1."""
    return x.unsqueeze(-1) if n_spatial == 0 else x


def frame_statistics(x: torch.Tensor, n_spatial: int = 2) -> torch.Tensor:
    """Per-frame ``[mean, variance, energy, enstrophy]`` summed over channels: ``[..., C, *spatial] -> [..., 4]``."""
    x = _as_field(x, n_spatial)
    dims = tuple(range(-max(n_spatial, 1), 0))
    mean = x.mean(dims)
    var = x.var(dims, unbiased=False)
    energy = x.square().sum(dims)
    grad_dims = [d for d in dims if x.shape[d] > 1]
    grads = torch.gradient(x, dim=grad_dims) if grad_dims else ()
    enstrophy = sum((g.square().sum(dims) for g in grads), torch.zeros_like(energy))
    return torch.stack([mean, var, energy, enstrophy], dim=-1).sum(-2)


def length_mask(lengths: torch.Tensor, L: int) -> torch.Tensor:
    """``lengths [N]`` -> bool ``[N, L]``, True on each row's first ``lengths[n]`` frames."""
    return torch.arange(L, device=lengths.device)[None] < lengths[:, None]


def explicit_features(obs: torch.Tensor, lengths: torch.Tensor | None = None, n_spatial: int = 2) -> torch.Tensor:
    """App. G.1 explicit prompt (raw, not standardised): ``obs [N, L, C, *spatial]`` -> ``[N, 8]``."""
    N, L = obs.shape[:2]
    if lengths is None:
        lengths = torch.full((N,), L, dtype=torch.long, device=obs.device)
    S = frame_statistics(obs, n_spatial)  # [N, L, 4]
    w = length_mask(lengths, L).to(S.dtype)[..., None]
    n = lengths.to(S.dtype)[:, None]
    temporal_mean = (S * w).sum(1) / n
    last = S.gather(1, (lengths - 1).view(N, 1, 1).expand(N, 1, S.shape[-1])).squeeze(1)
    trend = (last - S[:, 0]) / n
    return torch.stack([temporal_mean, trend], dim=-1).reshape(N, N_EXPLICIT)


def low_modes(x: torch.Tensor, n_spatial: int = 2, modes: int = 0) -> torch.Tensor:
    """Complex low-mode spectrum of frames ``[..., C, *spatial]`` -> ``[..., C, *kept]`` (``modes = 0``: all)."""
    x = _as_field(x, n_spatial)
    dims = tuple(range(-max(n_spatial, 1), 0))
    s = torch.fft.rfftn(x, dim=dims, norm="forward")
    if modes > 0:
        for d in dims[:-1]:
            if s.shape[d] > 2 * modes:
                s = torch.cat([s.narrow(d, 0, modes), s.narrow(d, s.shape[d] - modes, modes)], dim=d)
        s = s.narrow(dims[-1], 0, min(modes, s.shape[dims[-1]]))
    return s


def spectral_features(x: torch.Tensor, n_spatial: int = 2, modes: int = 0) -> torch.Tensor:
    """App. G.2 spectra: frames ``[..., C, *spatial]`` -> ``[..., F]`` (low modes, real/imag stacked, flattened)."""
    return torch.view_as_real(low_modes(x, n_spatial, modes)).flatten(-max(n_spatial, 1) - 2)


def transfer_features(obs: torch.Tensor, n_spatial: int = 2, modes: int = 0, rel_eps: float = 1e-2) -> torch.Tensor:
    """Per-mode one-step transfer ``r_t = s_t conj(s_{t-1}) / (|s_{t-1}|^2 + eps)``: ``obs [N, L, C, *spatial]`` ->
    ``[N, L, F]`` (real/imag stacked; ``r_0 = 0``). For dynamics that act mode-wise (diffusion, advection: what an
    FNO's spectral weights encode) ``r_t`` *is* the Fourier multiplier of one step, independent of the initial
    state; a GRU would otherwise have to learn this product of two frames. ``eps`` is ``rel_eps`` times the mean
    mode energy of the frame, so empty modes give ~0 instead of noise."""
    s = low_modes(obs, n_spatial, modes)  # [N, L, C, *kept]
    prev, cur = s[:, :-1], s[:, 1:]
    energy = prev.abs().square()
    kept = tuple(range(3, s.dim()))
    eps = rel_eps * energy.mean(kept, keepdim=True) + 1e-12
    r = torch.cat([torch.zeros_like(s[:, :1]), cur * prev.conj() / (energy + eps)], dim=1)
    return torch.view_as_real(r).flatten(2)


def channel_operator(
    obs: torch.Tensor, lengths: torch.Tensor | None = None, n_spatial: int = 2, modes: int = 0, rel_eps: float = 1e-3
) -> torch.Tensor:
    """Least-squares one-step channel operator ``M [C, C]`` of the low-mode spectra over each row's observed pairs
    (module docstring): ``obs [N, L, C, *spatial]`` -> ``[N, 2 C^2]`` (real/imag). ``eps`` is ``rel_eps`` times
    the mean diagonal of the Gram matrix (a ridge, so one pair or a dead channel stays finite); L = 1 gives 0."""
    N, L = obs.shape[:2]
    if lengths is None:
        lengths = torch.full((N,), L, dtype=torch.long, device=obs.device)
    s = low_modes(obs, n_spatial, modes).flatten(3)  # [N, L, C, K] complex
    pair = length_mask(lengths, L)[:, 1:].to(s.real.dtype)[..., None, None]  # pair (t-1, t) observed
    prev, cur = s[:, :-1] * pair, s[:, 1:]
    cross = torch.einsum("ntck,ntdk->ncd", cur, prev.conj())
    gram = torch.einsum("ntck,ntdk->ncd", prev, prev.conj())
    C = s.shape[2]
    eps = rel_eps * gram.diagonal(dim1=-2, dim2=-1).real.mean(-1) + 1e-12
    eye = torch.eye(C, dtype=gram.dtype, device=gram.device)
    M = torch.linalg.solve(gram + eps[:, None, None] * eye, cross, left=False)  # cross @ inv(gram + eps I)
    return torch.view_as_real(M.resolve_conj()).flatten(1)


# ----------------------------------------------------------------------------------------------------------------
# Module
# ----------------------------------------------------------------------------------------------------------------
class Prompter(nn.Module):
    """Observation sequence ``[N, L, *frame_shape]`` (+ ``lengths [N]``) -> prompt ``[N, n_explicit + gru_hidden]``."""

    def __init__(self, cfg: PrompterConfig, frame_shape: tuple[int, ...], n_params: int):
        super().__init__()
        self.cfg = cfg
        self.frame_shape = tuple(int(s) for s in frame_shape)
        self.n_spatial = len(self.frame_shape) - 1
        self.n_params = int(n_params)
        n_spec = self.gru_inputs(torch.zeros(1, 1, *self.frame_shape)).shape[-1]
        self.gru = nn.GRU(n_spec, cfg.gru_hidden, num_layers=cfg.gru_layers, batch_first=True)
        self.n_explicit = (N_EXPLICIT if cfg.statistics else 0) + (2 * self.frame_shape[0] ** 2 if cfg.operator else 0)
        self.aux_head = nn.Linear(self.prompt_dim, self.n_params)
        self.register_buffer("explicit_mean", torch.zeros(self.n_explicit))
        self.register_buffer("explicit_std", torch.ones(self.n_explicit))
        self.register_buffer("spectral_mean", torch.zeros(n_spec))
        self.register_buffer("spectral_std", torch.ones(n_spec))

    @property
    def prompt_dim(self) -> int:
        return self.n_explicit + self.cfg.gru_hidden

    def _lengths(self, obs: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
        if obs.dim() != 2 + len(self.frame_shape) or tuple(obs.shape[2:]) != self.frame_shape:
            raise ValueError(f"obs: expected [N, L, {', '.join(map(str, self.frame_shape))}], got {tuple(obs.shape)}")
        N, L = obs.shape[:2]
        if L < 1:
            raise ValueError(f"obs: needs at least one frame (L >= 1), got shape {tuple(obs.shape)}")
        if lengths is None:
            return torch.full((N,), L, dtype=torch.long, device=obs.device)
        lengths = torch.as_tensor(lengths, dtype=torch.long, device=obs.device)
        if lengths.shape != (N,) or bool((lengths < 1).any()) or bool((lengths > L).any()):
            raise ValueError(f"lengths: expected [{N}] ints in [1, {L}], got {lengths.tolist()}")
        return lengths

    @torch.no_grad()
    def fit_normalization(self, obs: torch.Tensor, lengths: torch.Tensor | None = None) -> None:
        """Fit the stored feature standardisation on training observations ``[N, L, *frame_shape]``."""
        lengths = self._lengths(obs, lengths)
        ex = self.explicit_raw(obs.float(), lengths)
        mask = length_mask(lengths, obs.shape[1])
        sp = self.gru_inputs(obs.float())[mask]
        for name, feats in (("explicit", ex), ("spectral", sp)):
            mean, std = feats.mean(0), feats.std(0, unbiased=False)
            # A constant feature (e.g. the trend at L = 1, a zero mode) must not blow up: floor its std.
            std = torch.where(std > 1e-6 * std.max().clamp(min=1e-12), std, torch.ones_like(std))
            getattr(self, f"{name}_mean").copy_(mean)
            getattr(self, f"{name}_std").copy_(std)

    def gru_inputs(self, obs: torch.Tensor) -> torch.Tensor:
        """Raw GRU inputs ``[N, L, F]``: low-mode spectra (+ transfer ratios when ``cfg.transfer``)."""
        parts = []
        if self.cfg.spectra:
            parts.append(spectral_features(obs, self.n_spatial, self.cfg.spectral_modes))
        if self.cfg.transfer:
            parts.append(transfer_features(obs, self.n_spatial, self.cfg.spectral_modes))
        return torch.cat(parts, dim=-1)

    def explicit_raw(self, obs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Unstandardised explicit prompt ``[N, n_explicit]``: App. G.1 statistics and/or the channel operator."""
        parts = [explicit_features(obs, lengths, self.n_spatial)] if self.cfg.statistics else []
        if self.cfg.operator:
            parts.append(channel_operator(obs, lengths, self.n_spatial, self.cfg.spectral_modes))
        return torch.cat(parts, dim=-1)

    def explicit(self, obs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Standardised explicit prompt ``[N, n_explicit]``."""
        return (self.explicit_raw(obs, lengths) - self.explicit_mean) / self.explicit_std

    def implicit(self, obs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """GRU final hidden state over the standardised spectra ``[N, gru_hidden]``."""
        out, _ = self.gru((self.gru_inputs(obs) - self.spectral_mean) / self.spectral_std)  # [N, L, hidden], causal
        idx = (lengths - 1).view(-1, 1, 1).expand(-1, 1, out.shape[-1])
        return out.gather(1, idx).squeeze(1)

    def forward(self, obs: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        lengths = self._lengths(obs, lengths)
        obs = obs.float()
        return torch.cat([self.explicit(obs, lengths), self.implicit(obs, lengths)], dim=-1)

    def aux(self, prompt: torch.Tensor) -> torch.Tensor:
        """Regressed (standardised) environment parameters ``[N, P]`` from ``prompt [N, prompt_dim]``."""
        return self.aux_head(prompt)
