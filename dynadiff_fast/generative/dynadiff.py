"""DynaDiff: generate expert FNO weights for a new environment from a few observed frames.

    dd = DynaDiff.load(run_dir)          # VAE + DiT + prompter + standardisations + expert architecture
    experts, scores = dd.generate(obs, n_samples=8, select="prefix", steps=50, guidance=None, seed=0,
                                  prompt_mode="real")

One request, top to bottom (paper Fig. 2): ``obs`` -> prompter -> prompt -> DiT sampler (DDIM by default) ->
standardised latents -> latents -> VAE decoder -> node tokens -> WeightNormalizer.denormalize ->
WeightGraph.decode_stacked -> ``BatchedFNO`` (``BatchedMLP`` for ODE experts). With ``select="prefix"`` each environment gets ``n_samples``
candidates, ranked in one batched call by the prefix score every method of the benchmark selects by
(``experts.evaluate.prefix_error``: MSE of an L-1-step rollout from the first observed frame); the best is kept.

Run directory of ``dynadiff train dit`` (``dynadiff train all`` puts it under ``RUN/dit`` beside ``RUN/vae``)::

    dynadiff.json             manifest: format, system, dataset channels/grid/stats, expert config, VAE run
                              (path relative to this folder), latent shape, DiT + prompter configs
    config.yaml               resolved training config, versions, seed
    checkpoints/step_*/       DynaDiffModel weights + EMA (inference loads the EMA), optimizer, meta.json
    log.jsonl                 losses per logging interval
    quality.json              end-of-training check: generated vs zoo latents per training environment

``DynaDiffModel`` is the trained module: prompter + DiT + stored standardisations (latent mean/std from the
zoo, environment-parameter mean/std for L_aux) + reference prompts of the training environments (for the
shuffled-prompt control with a single environment).
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dynadiff_fast import io
from dynadiff_fast._tensor import as_tensor
from dynadiff_fast.data.dataset import identity_mismatches
from dynadiff_fast.generative.diffusion import Schedule, guided, q_sample, sample, training_target
from dynadiff_fast.generative.dit import DiTConfig, LatentDiT
from dynadiff_fast.generative.prompter import Prompter, PrompterConfig
from dynadiff_fast.generative.vicinal import mix as vicinal_mix
from dynadiff_fast.profiling import nvtx_range

FORMAT = "dynadiff-dit-run"
VERSION = 1
MANIFEST = "dynadiff.json"
SELECT = ("prefix", "none", "ensemble")
# K, the candidates per environment of every request that does not name it (generate, evaluate, demo,
# benchmark, diagnostics): best-of-8 by the prefix score.
N_SAMPLES = 8
PROMPT_MODES = ("real", "shuffled", "zero")
# Standardised frames are a few units in magnitude; observations beyond this are almost surely raw physical ones.
OFF_SCALE = 100.0


# ----------------------------------------------------------------------------------------------------------------
# The trained module
# ----------------------------------------------------------------------------------------------------------------
class DynaDiffModel(nn.Module):
    """Prompter + latent DiT + stored standardisations (all buffers travel in the checkpoint).

    Buffers: ``latent_mean [L, d]`` and ``latent_std [d]`` (zoo latents, per latent channel),
    ``param_mean/param_std [P]`` (environment parameters, for L_aux), ``reference_prompts [R, prompt_dim]`` and
    ``reference_env [R]`` (one prompt per training environment, refreshed at every checkpoint).
    """

    def __init__(
        self,
        dit_cfg: DiTConfig,
        prompter_cfg: PrompterConfig,
        latent_shape: tuple[int, int],
        frame_shape: tuple[int, ...],
        n_params: int,
        n_reference: int,
    ):
        super().__init__()
        self.prompter = Prompter(prompter_cfg, frame_shape, n_params)
        self.dit = LatentDiT(dit_cfg, latent_shape, self.prompter.prompt_dim)
        L, d = latent_shape
        self.register_buffer("latent_mean", torch.zeros(L, d))
        self.register_buffer("latent_std", torch.ones(d))
        self.register_buffer("param_mean", torch.zeros(n_params))
        self.register_buffer("param_std", torch.ones(n_params))
        self.register_buffer("reference_prompts", torch.zeros(n_reference, self.prompter.prompt_dim))
        self.register_buffer("reference_env", torch.full((n_reference,), -1, dtype=torch.long))
        self.schedule = Schedule.make(dit_cfg.schedule, dit_cfg.diffusion_steps)

    @property
    def cfg(self) -> DiTConfig:
        return self.dit.cfg

    # -- standardisation ---------------------------------------------------------------------------
    @torch.no_grad()
    def fit_latent_stats(self, z: torch.Tensor) -> None:
        """Zoo latents ``z [N, L, d]``: per-node mean, per-channel std pooled over experts and nodes."""
        mean = z.mean(0)
        std = (z - mean).square().mean((0, 1)).sqrt()
        floor = 1e-3 * std.max().clamp(min=1e-12)  # channels that do not vary across the zoo stay unscaled
        self.latent_mean.copy_(mean)
        self.latent_std.copy_(torch.where(std > floor, std, torch.ones_like(std)))

    @torch.no_grad()
    def fit_param_stats(self, params: torch.Tensor) -> None:
        params = params.float()
        std = params.std(0, unbiased=False)
        self.param_mean.copy_(params.mean(0))
        self.param_std.copy_(torch.where(std > 0, std, torch.ones_like(std)))

    def standardize_latent(self, z: torch.Tensor) -> torch.Tensor:
        return (z - self.latent_mean) / self.latent_std

    def unstandardize_latent(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.latent_std + self.latent_mean

    def standardize_params(self, p: torch.Tensor) -> torch.Tensor:
        return (p.float() - self.param_mean) / self.param_std

    # -- training ----------------------------------------------------------------------------------
    def forward(
        self,
        obs: torch.Tensor,
        lengths: torch.Tensor,
        z0: torch.Tensor,
        params: torch.Tensor,
        n: torch.Tensor,
        eps: torch.Tensor,
        drop: torch.Tensor,
        mix: tuple[torch.Tensor, ...] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Training losses ``(L_diffusion, L_aux)`` for one batch.

        Args:
            obs ``[B, L, *frame]`` padded observations with ``lengths [B]``; z0 ``[B, L_lat, d]`` zoo latents (raw);
            params ``[B, P]`` environment parameters (raw); n ``[B]`` diffusion steps; eps ``[B, L_lat, d]`` noise;
            drop ``[B]`` bool: condition dropped (classifier-free guidance training).
            mix: ``(obs_b, lengths_b, params_b, lam [B])``: each row's partner (``generative.vicinal``; ``z0`` is
                then the mixed expert's latent): prompt and parameters become ``lam a + (1 - lam) b`` (lam = 1: as is).
        """
        prompt = self.prompter(obs, lengths)
        if mix is not None:
            obs_b, lengths_b, params_b, lam = mix
            prompt = vicinal_mix(prompt, self.prompter(obs_b, lengths_b), lam)
            params = vicinal_mix(params.float(), params_b.float(), lam)
        aux = F.mse_loss(self.prompter.aux(prompt), self.standardize_params(params))
        x0 = self.standardize_latent(z0)
        out = self.dit(q_sample(self.schedule, x0, n, eps), n, prompt, drop)
        return F.mse_loss(out, training_target(self.schedule, x0, n, eps, self.cfg.prediction)), aux

    # -- sampling ----------------------------------------------------------------------------------
    @torch.no_grad()
    def sample_latents(
        self,
        prompts: torch.Tensor,
        noise: torch.Tensor,
        steps: int = 50,
        guidance: float | None = None,
        method: str = "ddim",
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Raw latents ``[B, L, d]`` for ``prompts [B, prompt_dim]`` from ``noise [B, L, d]``; ``guidance``: one
        classifier-free guidance scale, or one per row ``[B]`` (None: plain conditional)."""

        def cond(x, n):
            return self.dit(x, n, prompts)

        model = cond
        if guidance is not None:
            if self.cfg.cond_dropout <= 0:
                raise ValueError(
                    "guidance: this DiT was trained with cond_dropout=0, so it has no unconditional branch; "
                    "pass guidance=None or retrain with dit.cond_dropout > 0"
                )
            scale = torch.as_tensor(guidance, dtype=noise.dtype, device=noise.device)
            scale = scale.view(-1, *[1] * (noise.dim() - 1)) if scale.dim() == 1 else scale
            model = guided(cond, lambda x, n: self.dit(x, n, None), scale)
        x = sample(model, noise, self.schedule, steps, method, self.cfg.prediction, generator=generator)
        return self.unstandardize_latent(x)


# ----------------------------------------------------------------------------------------------------------------
# Run directory
# ----------------------------------------------------------------------------------------------------------------
def resolve_run_dir(run_dir: str | os.PathLike) -> Path:
    """The DiT run folder: ``run_dir`` itself or ``run_dir/dit`` (a ``dynadiff train all`` run)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run_dir: {run_dir} is not a folder")
    for cand in (run_dir, run_dir / "dit"):
        if (cand / MANIFEST).exists():
            return cand
    raise FileNotFoundError(
        f"run_dir: {run_dir} holds no {MANIFEST} (nor {run_dir / 'dit' / MANIFEST}); "
        "is this the output of `dynadiff train dit` or `dynadiff train all`?"
    )


def read_manifest(dit_dir: Path) -> dict[str, Any]:
    doc = io.read_json(dit_dir / MANIFEST, "DynaDiff run manifest")
    if doc.get("format") != FORMAT or doc.get("version") != VERSION:
        raise ValueError(
            f"run_dir: {dit_dir / MANIFEST} has format {doc.get('format')!r} v{doc.get('version')!r}; "
            f"this code reads {FORMAT!r} v{VERSION}"
        )
    return doc


def check_run(run_dir: str | os.PathLike, ds, zoo=None) -> Path:
    """Refuse, before any compute, a run trained on another dataset than ``ds`` (system, channels, grid, frame
    spacing, standardisation) or for another expert architecture than ``zoo``'s; returns the DiT run folder."""
    dit_dir = resolve_run_dir(run_dir)
    manifest = read_manifest(dit_dir)
    bad = identity_mismatches(manifest, ds)
    if bad:
        raise ValueError(
            f"run: {dit_dir} was trained on another dataset than {ds.path} ({'; '.join(bad[:4])}); "
            "pass the run's own dataset"
        )
    if zoo is not None and manifest["expert_config"] != zoo.manifest["expert_config"]:
        raise ValueError(
            f"run: {dit_dir} generates {io.short_repr(manifest['expert_config'])} experts, the zoo {zoo.root} "
            f"holds {io.short_repr(zoo.manifest['expert_config'])}; pass the zoo the run was trained on"
        )
    return dit_dir


def build_model(manifest: dict[str, Any]) -> DynaDiffModel:
    from dynadiff_fast.config import build

    return DynaDiffModel(
        build(DiTConfig, manifest["dit"], "dit"),
        build(PrompterConfig, manifest["prompter"], "prompter"),
        tuple(manifest["latent_shape"]),
        tuple(manifest["frame_shape"]),
        len(manifest["param_names"]),
        len(manifest["reference_envs"]),
    )


def _check_scores(scores: torch.Tensor, L: int) -> None:
    """Prefix scores ``[N, candidates]``: an environment none of whose candidates has a finite score has no expert
    to keep (they all diverge on its observations), which is an error, not a NaN in a result."""
    if L < 2:
        return
    dead = (~torch.isfinite(scores)).all(1).nonzero().flatten().tolist()
    if dead:
        raise ValueError(
            f"generate: every candidate of environment(s) {dead[:5]} diverges on its observations (NaN/inf prefix "
            "score); are the observations standardised like this run's data (DynaDiff.standardize)?"
        )


# ----------------------------------------------------------------------------------------------------------------
# Generation API
# ----------------------------------------------------------------------------------------------------------------
class DynaDiff:
    """A trained DynaDiff: ``DynaDiff.load(run_dir)``, then ``generate(obs, ...)``.

    Attributes: ``model`` (DynaDiffModel, EMA weights, eval mode), ``vae``, ``graph``, ``normalizer``,
    ``expert_config``, ``manifest`` (dict), ``system_name``, ``frame_shape``, ``channel_names``, ``mean``/``std``
    (the dataset standardisation the experts and the prompter expect), ``device``.
    """

    def __init__(self, model, vae, graph, normalizer, expert_config, manifest: dict[str, Any], device="cpu"):
        self.model = model.eval()
        self.vae = vae.eval()
        self.graph = graph
        self.normalizer = normalizer
        self.expert_config = expert_config
        self.manifest = manifest
        self.system_name: str = manifest["system_name"]
        self.frame_shape = tuple(manifest["frame_shape"])
        self.channel_names = tuple(manifest["channel_names"])
        self.mean = torch.tensor(manifest["mean"], dtype=torch.float32)
        self.std = torch.tensor(manifest["std"], dtype=torch.float32)
        self.device = torch.device(device)

    @classmethod
    def load(cls, run_dir: str | os.PathLike, device: str | torch.device = "cpu", step: int | None = None) -> DynaDiff:
        """Load a trained run (``dynadiff train dit`` output, or a ``dynadiff train all`` run holding ``dit/``);
        the EMA weights of checkpoint ``step`` (default: the latest).

        Raises ``FileNotFoundError`` for a missing component (manifest, VAE run, checkpoint) and ``ValueError`` for
        one trained for another system or expert architecture.
        """
        from dynadiff_fast.experts.configs import config_from_dict
        from dynadiff_fast.generative.checkpoint import load_checkpoint
        from dynadiff_fast.generative.vae import load_vae

        dit_dir = resolve_run_dir(run_dir)
        manifest = read_manifest(dit_dir)
        vae_dir = (dit_dir / manifest["vae_run"]).resolve()
        if not vae_dir.is_dir():
            raise FileNotFoundError(
                f"run_dir: the VAE run {vae_dir} named by {dit_dir / MANIFEST} is missing "
                "(moved or deleted? keep the VAE run at the same relative place)"
            )
        vae, graph, normalizer, vae_meta = load_vae(vae_dir)
        if vae_meta.get("system_name", manifest["system_name"]) != manifest["system_name"]:
            raise ValueError(
                f"run_dir: the VAE in {vae_dir} was trained on a {vae_meta['system_name']} zoo, the DiT in {dit_dir} "
                f"on {manifest['system_name']}"
            )
        expert_config = config_from_dict(manifest["expert_config"])
        if vae_meta.get("expert_config", manifest["expert_config"]) != manifest["expert_config"]:
            raise ValueError(
                f"run_dir: the VAE in {vae_dir} was trained on another expert architecture than {dit_dir} "
                f"(VAE: {vae_meta['expert_config']}, DiT run: {manifest['expert_config']})"
            )
        if tuple(vae.latent_shape) != tuple(manifest["latent_shape"]):
            raise ValueError(
                f"run_dir: VAE latent shape {tuple(vae.latent_shape)} differs from the DiT's "
                f"{tuple(manifest['latent_shape'])}: the VAE in {vae_dir} was retrained after the DiT"
            )
        model = build_model(manifest)
        if load_checkpoint(dit_dir, ema=model, step=step) is None:
            raise FileNotFoundError(f"run_dir: {dit_dir} has no checkpoint yet (is training still running?)")
        return cls(model.to(device), vae.to(device), graph, normalizer, expert_config, manifest, device)

    # -- input checks ------------------------------------------------------------------------------
    def check_obs(self, obs: Any, name: str = "obs") -> torch.Tensor:
        """Validate standardised observations ``[L, *frame]`` or ``[N, L, *frame]`` -> float32 ``[N, L, *frame]``."""
        obs = as_tensor(obs, name)
        if not obs.dtype.is_floating_point:
            raise TypeError(f"{name}: dtype {obs.dtype} is not a floating type (standardised frames expected)")
        nf = len(self.frame_shape)
        if obs.dim() == nf + 1:
            obs = obs[None]
        shape = "[L, " + ", ".join(map(str, self.frame_shape)) + "]"
        if obs.dim() != nf + 2:
            raise ValueError(f"{name}: expected {shape} or [N, L, ...] frames, got shape {tuple(obs.shape)}")
        if tuple(obs.shape[2:]) != self.frame_shape:
            raise ValueError(
                f"{name}: frames of shape {tuple(obs.shape[2:])} do not match this run's {self.frame_shape} "
                f"(channels {', '.join(self.channel_names)} on the {self.system_name} grid)"
            )
        if obs.shape[0] == 0 or obs.shape[1] == 0:
            raise ValueError(f"{name}: needs N >= 1 environments and L >= 1 frames, got shape {tuple(obs.shape)}")
        if not bool(torch.isfinite(obs).all()):
            bad = int((~torch.isfinite(obs)).sum())
            raise ValueError(f"{name}: contains {bad} NaN/inf value(s); observations must be finite")
        peak = float(obs.abs().max())
        if peak > OFF_SCALE:
            warnings.warn(
                f"{name}: values up to {peak:.3g} are far outside the standardised scale this run was trained on "
                f"(|x| of a few units); pass raw physical frames through DynaDiff.standardize first",
                stacklevel=3,
            )
        return obs.to(self.device, torch.float32)

    def standardize(self, frames: torch.Tensor) -> torch.Tensor:
        """Raw physical frames ``[..., C, *space]`` -> the standardisation this run was trained with."""
        view = (-1,) + (1,) * (len(self.frame_shape) - 1)
        return (frames - self.mean.view(view).to(frames)) / self.std.view(view).to(frames)

    # -- pipeline stages ---------------------------------------------------------------------------
    @torch.no_grad()
    def prompts(self, obs: torch.Tensor, mode: str = "real", seed: int = 0) -> torch.Tensor:
        """Prompts ``[N, prompt_dim]`` for checked observations ``[N, L, ...]`` under a prompt ``mode``.

        ``real``: the prompter's output. ``zero``: all-zero prompts (the explicit part's training mean).
        ``shuffled``: N >= 2: the batch's prompts rotated by a seeded offset in 1..N-1, so every environment gets
        another one's; N = 1: the reference prompt of a seeded random training environment other than the one
        nearest to the real prompt.
        """
        if mode not in PROMPT_MODES:
            raise ValueError(f"prompt_mode: must be one of {PROMPT_MODES}, got {mode!r}")
        with nvtx_range("dit/prompter"):
            real = self.model.prompter(obs)
        if mode == "real":
            return real
        if mode == "zero":
            return torch.zeros_like(real)
        g = torch.Generator().manual_seed(seed)
        N = real.shape[0]
        if N >= 2:
            shift = int(torch.randint(1, N, (1,), generator=g))
            return real.roll(shift, dims=0)
        ref = self.model.reference_prompts
        if ref.shape[0] < 2:
            raise ValueError("prompt_mode='shuffled' with one environment needs >= 2 training environments in the run")
        nearest = int(torch.cdist(real, ref).argmin())
        others = [i for i in range(ref.shape[0]) if i != nearest]
        pick = others[int(torch.randint(len(others), (1,), generator=g))]
        return ref[pick : pick + 1].clone()

    def guidance_scales(self, guidance: Any = None) -> tuple[float, ...]:
        """The guidance scales of a generation request: ``guidance`` (a number or a sequence of them) or, when None,
        the run's own (``dit.guidance``; empty: ``(1.0,)``, plain conditional)."""
        scales = self.model.cfg.guidance if guidance is None else guidance
        scales = (scales,) if isinstance(scales, int | float) else tuple(scales)
        if any(isinstance(w, bool) or not isinstance(w, int | float) for w in scales):
            raise TypeError(f"guidance: expected a number, a sequence of numbers or None, got {guidance!r}")
        if any(not math.isfinite(w) or w < 0 for w in scales):
            raise ValueError(f"guidance: scales must be finite numbers >= 0, got {list(scales)}")
        return tuple(float(w) for w in scales) or (1.0,)

    def n_candidates(self, n_samples: int, guidance: Any = None) -> int:
        """Candidates per environment of ``generate``: ``n_samples`` at each guidance scale."""
        return n_samples * len(self.guidance_scales(guidance))

    @torch.no_grad()
    def decode(self, z: torch.Tensor):
        """Raw latents ``[E, L, d]`` -> ``BatchedFNO`` (``BatchedMLP``) of E experts."""
        from dynadiff_fast.experts.stacked import experts_type

        with nvtx_range("dit/decode"):
            tokens = self.normalizer.denormalize(self.vae.decode(z))
            stacked = {k: v.contiguous() for k, v in self.graph.decode_stacked(tokens).items()}
        finite = torch.stack([torch.isfinite(v).all() for v in stacked.values()]).cpu()  # one device sync
        if not bool(finite.all()):
            bad = [k for k, ok in zip(stacked, finite.tolist(), strict=True) if not ok]
            raise ValueError(
                f"decode: the decoded weights {bad[:3]} hold NaN/inf (a corrupt run, or latents off scale)"
            )
        # generated experts are for inference: without requires_grad, a rollout outside no_grad builds no autograd
        # graph (one kept for every step of every expert made the per-expert cost grow with their number)
        return experts_type(self.expert_config)(self.expert_config, stacked).eval().requires_grad_(False)

    @torch.no_grad()
    def score(self, experts, obs: torch.Tensor, n_samples: int) -> torch.Tensor:
        """Prefix score (``experts.evaluate.prefix_error``) of experts ``[N * n_samples]`` (env-major) on their
        environment's observations ``obs [N, L, ...]`` -> ``[N * n_samples]`` (NaN when L = 1: nothing to score)."""
        from dynadiff_fast.experts.evaluate import paired_prefix_errors

        N, L = obs.shape[:2]
        if L < 2:
            return torch.full((N * n_samples,), float("nan"))
        with nvtx_range("dit/score"):
            return paired_prefix_errors(experts, obs.repeat_interleave(n_samples, dim=0)).cpu()

    def generate(
        self,
        obs: Any,
        n_samples: int = N_SAMPLES,
        select: str = "prefix",
        steps: int = 50,
        guidance: float | None = None,
        seed: int = 0,
        prompt_mode: str = "real",
        method: str = "ddim",
    ):
        """Generate experts for the environment(s) observed in ``obs``.

        Args:
            obs: standardised frames ``[L, *frame]`` (one environment) or ``[N, L, *frame]``; any ``L >= 1``.
            n_samples: candidates K per environment and guidance scale.
            select: "prefix": keep each environment's best candidate by the prefix score on its observed frames
                (the first candidate when L = 1); "none": keep all N*K*S (env-major: expert (n*S + s)*K + k);
                "ensemble" (K >= 2): keep each environment's K candidates of the one guidance scale whose K-member
                ensemble has the lowest fair CRPS on the observed frames (``experts.ensemble.pick_ensemble``; the
                first scale when L = 1), N*K experts, env-major (expert n*K + k).
            steps: sampler steps (network evaluations).
            guidance: classifier-free guidance scale(s): a number or a sequence of S of them, K candidates at
                each, all ranked together (None: the run's ``dit.guidance``; empty there: scale 1, plain
                conditional). The k-th candidate starts from the same noise at every scale.
            seed: seeds the initial noise (and the shuffled control). method: "ddim" | "ddpm".
            prompt_mode: "real" | "shuffled" | "zero" (controls, see ``prompts``).
        Returns:
            ``(experts, scores)``: a ``BatchedFNO`` (``BatchedMLP``) of N (prefix), N*K*S (none) or N*K (ensemble)
            experts, and their prefix scores (MSE) ``[N]``, ``[N*K*S]`` or ``[N*K]`` (NaN when L = 1).
        """
        if select not in SELECT:
            raise ValueError(f"select: must be one of {SELECT}, got {select!r}")
        if not isinstance(n_samples, int) or n_samples < 1:
            raise ValueError(f"n_samples: expected an int >= 1, got {n_samples!r}")
        if select == "ensemble" and n_samples < 2:
            raise ValueError(f"n_samples: select='ensemble' needs K >= 2 members per environment, got {n_samples}")
        scales = self.guidance_scales(guidance)
        obs = self.check_obs(obs)
        N, K, S = obs.shape[0], n_samples, len(scales)
        prompts = self.prompts(obs, prompt_mode, seed).repeat_interleave(S * K, dim=0)
        g = torch.Generator().manual_seed(seed)
        noise = torch.randn((N, 1, K, *self.model.dit.latent_shape), generator=g)
        noise = noise.expand(N, S, K, *noise.shape[3:]).reshape(N * S * K, *noise.shape[3:]).to(self.device)
        scale = None if scales == (1.0,) else torch.tensor(scales).repeat_interleave(K).repeat(N)
        with nvtx_range("dit/sample"):
            z = self.model.sample_latents(prompts, noise, steps, scale, method, generator=g)
        experts = self.decode(z)
        if select == "ensemble":
            from dynadiff_fast.experts.ensemble import pick_ensemble

            with nvtx_range("dit/score"):
                keep, scores = pick_ensemble(experts, obs, S)
            _check_scores(scores.view(N, -1), obs.shape[1])
            return experts.select(keep), scores
        scores = self.score(experts, obs, S * K)
        _check_scores(scores.view(N, S * K), obs.shape[1])
        if select == "none":
            return experts, scores
        if obs.shape[1] < 2 and K > 1:
            warnings.warn(
                "select='prefix' with L = 1 frame has no frame pair to score: kept the first candidate", stacklevel=2
            )
        per_env = scores.view(N, S * K).nan_to_num(float("inf"))
        best = per_env.argmin(1) + torch.arange(N) * (S * K)
        return experts.select(best), scores[best]
