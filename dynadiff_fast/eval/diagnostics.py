"""Where a trained DynaDiff loses the environment signal, and whether it memorises its zoo.

One request runs obs -> prompter -> prompt -> DiT -> latent -> VAE decoder -> expert. A bad expert for an
environment can come from any stage; each function below measures one of them, on environments the caller
observes (``obs [N, L, *frame]``, standardised, with their parameters ``params [N, P]``).

Prompter (``prompter_r2``): does the prompt carry the environment? The auxiliary head (trained by L_aux) reads
the parameters back from the prompt, ``p_hat_n = aux(prompter(obs_n)) * param_std + param_mean``; per parameter j
over the N environments

    R2_j = 1 - sum_n (p_hat_nj - p_nj)^2 / sum_n (p_nj - mean_n p_nj)^2,    RMSE_j = sqrt(mean_n (p_hat_nj - p_nj)^2)

(R2 is None for N < 2 or a parameter that does not vary). R2 near 1 on unseen environments: the signal survives
the prompter, so a loss must come later.

DiT (``latent_diagnostics``): does generation land on the environment? In the standardised latent space
``x = (z - latent_mean) / latent_std``, with ``|a - b|^2`` the mean over the L x d entries of ``(a - b)^2``. The
zoo latents are the VAE encoder means of every zoo expert; ``c_e`` is the centroid of zoo environment e. The true
centroid ``c*_n`` of observed environment n is its own ``c_e`` when it is seen, else a mix of zoo centroids
``sum_e w_e c_e`` (``interpolation_weights``: linear between the bracketing zoo environments for one parameter, the
nearest one outside the range; inverse-distance weighting of the 2^P nearest in standardised parameters for
P >= 2). With K latents ``x_nk`` generated from the real prompt,

    d_gen = mean_k |x_nk - c*_n|^2,    d_between = mean_{e != own} |c*_n - c_e|^2,    ratio = d_gen / d_between

(an unseen environment has no own zoo environment: every zoo environment counts in d_between). ratio < 1: the
samples land nearer their environment than the other environments are. ``nearest_zoo_env`` is the zoo
environment whose centroid is nearest to ``mean_k x_nk``, ``snapped`` whether it is the zoo environment nearest in
standardised parameters: expected for a seen environment; for an unseen one a high snap rate with a low ratio
says the DiT retrieves the nearest zoo environment rather than interpolating.

Memorisation (``memorisation_audit``): are generated experts copies of zoo experts? For each generated expert g
(K per observed environment) and zoo expert i,

    weight distance    D_w(g, i) = sqrt(mean over entries (t_g - t_i)^2), t = the normalised node tokens the VAE
                       sees (WeightNormalizer.normalize(WeightGraph.encode(expert)), flattened);
    function distance  D_f(g, i) = sqrt(mean over B x C x H x W (f_g(x) - f_i(x))^2), one-step predictions on the
                       frames x = ``frames[n]`` of g's environment n (test frames chosen by the caller);

``weight_nn`` / ``function_nn`` = min_i D, ``nearest_zoo_env`` = the environment of the weight-nearest zoo expert.
The zoo's own spread is the yardstick, computed the same way between zoo experts: ``*_within`` = mean over zoo
experts of the distance to the nearest OTHER expert of its own environment, ``*_between`` = to the nearest
expert of another environment (function distances on the same ``frames[n]``, averaged over the audited n). A
``weight_nn`` far below ``weight_within`` means a generated expert is closer to one zoo expert than two
independently fine-tuned experts of one environment are to each other: a copy.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from dynadiff_fast._tensor import as_tensor
from dynadiff_fast.generative.dynadiff import N_SAMPLES


# ----------------------------------------------------------------------------------------------------------------
# Input checks
# ----------------------------------------------------------------------------------------------------------------
def _check_params(params: Any, n: int, n_params: int) -> torch.Tensor:
    params = as_tensor(params, "params")
    if params.shape != (n, n_params):
        raise ValueError(
            f"params: expected shape [{n}, {n_params}] (one row per observed env), got {tuple(params.shape)}"
        )
    return params.detach().cpu().double()


def _check_seen(seen: Any, n: int) -> torch.Tensor:
    seen = as_tensor(seen, "seen")
    if seen.dtype != torch.bool or seen.shape != (n,):
        raise ValueError(f"seen: expected a bool tensor of shape [{n}], got {seen.dtype} {tuple(seen.shape)}")
    return seen.cpu()


def _check_count(name: str, value: Any) -> None:
    if not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}: expected an int >= 1, got {value!r}")


def _check_frames(dd, frames: Any, n: int) -> torch.Tensor:
    frames = as_tensor(frames, "frames")
    shape = tuple(frames.shape)
    if frames.dim() != len(dd.frame_shape) + 2 or shape[0] != n or shape[2:] != dd.frame_shape or shape[1] < 1:
        raise ValueError(f"frames: expected [{n}, B >= 1, {', '.join(map(str, dd.frame_shape))}], got {shape}")
    return frames.to(dd.device, torch.float32)


# ----------------------------------------------------------------------------------------------------------------
# Prompter
# ----------------------------------------------------------------------------------------------------------------
def r2_scores(pred: torch.Tensor, true: torch.Tensor) -> list[float | None]:
    """Coefficient of determination per column of ``[N, P]``; None for N < 2 or a constant column."""
    ss_tot = (true - true.mean(0)).square().sum(0)
    ss_res = (pred - true).square().sum(0)
    return [None if true.shape[0] < 2 or t == 0 else float(1 - r / t) for r, t in zip(ss_res, ss_tot)]


@torch.no_grad()
def prompter_r2(dd, obs: Any, params: Any) -> dict[str, Any]:
    """How well the prompt's auxiliary head recovers the environment parameters (R2 and RMSE per parameter)."""
    obs = dd.check_obs(obs)
    m = dd.model
    params = _check_params(params, obs.shape[0], m.param_mean.numel())
    pred = (m.prompter.aux(m.prompter(obs)) * m.param_std + m.param_mean).cpu().double()
    return {
        "param_names": list(dd.manifest["param_names"]),
        "r2": r2_scores(pred, params),
        "rmse": (pred - params).square().mean(0).sqrt().tolist(),
        "per_env": [{"params": p.tolist(), "predicted": q.tolist()} for p, q in zip(params, pred)],
    }


# ----------------------------------------------------------------------------------------------------------------
# Latent space
# ----------------------------------------------------------------------------------------------------------------
def zoo_environments(zoo) -> tuple[torch.Tensor, torch.Tensor]:
    """The zoo's environments: dataset indices ``[Z]`` (sorted) and their parameters ``[Z, P]`` (float64)."""
    envs = torch.unique(zoo.env_index)
    first = torch.stack([(zoo.env_index == e).nonzero()[0, 0] for e in envs])
    return envs, zoo.params[first].double()


def interpolation_weights(zoo_params: torch.Tensor, query: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Weights ``[Z]`` (summing to 1) of the zoo environments ``zoo_params [Z, P]`` standing in for ``query [P]``.

    P = 1: linear interpolation between the two zoo environments bracketing the query, all weight on the
    nearest one outside their range. P >= 2: inverse-distance weights of the 2^P nearest zoo environments in
    parameters divided by ``scale [P]`` (all weight on an exact match).
    """
    Z, P = zoo_params.shape
    w = torch.zeros(Z, dtype=torch.float64)
    if P == 1:
        p, q = zoo_params[:, 0], float(query[0])
        below, above = (p <= q).nonzero().flatten(), (p >= q).nonzero().flatten()
        if below.numel() == 0 or above.numel() == 0:
            w[(p - q).abs().argmin()] = 1.0
            return w
        a, b = below[p[below].argmax()], above[p[above].argmin()]
        t = 0.0 if a == b else (q - float(p[a])) / float(p[b] - p[a])
        w[a] += 1 - t
        w[b] += t
        return w
    d = ((zoo_params - query) / scale).norm(dim=1)
    near = d.topk(min(2**P, Z), largest=False).indices
    if d[near[0]] == 0:
        w[near[0]] = 1.0
        return w
    inv = 1 / d[near]
    w[near] = inv / inv.sum()
    return w


def _sq_dist(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean squared difference over the latent entries (last two axes), broadcast over the leading ones."""
    return (a - b).square().mean((-2, -1))


def true_centroid_weights(
    zoo_params: torch.Tensor, params: torch.Tensor, seen: torch.Tensor, scale: torch.Tensor
) -> tuple[torch.Tensor, list[int | None]]:
    """Weights ``[N, Z]`` of the zoo centroids forming each observed environment's true centroid, and its own zoo
    environment (None when unseen). A seen environment must be a zoo environment (same parameters)."""
    weights, own = [], []
    for n, p in enumerate(params):
        if not seen[n]:
            weights.append(interpolation_weights(zoo_params, p, scale))
            own.append(None)
            continue
        e = int(((zoo_params - p) / scale).norm(dim=1).argmin())
        if not torch.allclose(zoo_params[e], p, rtol=1e-6, atol=1e-12):
            raise ValueError(f"seen: env {n} (params {p.tolist()}) is marked seen but is no zoo environment")
        weights.append(torch.nn.functional.one_hot(torch.tensor(e), len(zoo_params)).double())
        own.append(e)
    return torch.stack(weights), own


@torch.no_grad()
def latent_diagnostics(
    dd,
    zoo,
    obs: Any,
    params: Any,
    seen: Any,
    n_samples: int = N_SAMPLES,
    steps: int = 50,
    seed: int = 0,
) -> dict[str, Any]:
    """Distances of generated latents to each environment's true zoo centroid vs the other environments'
    (module docstring: d_gen, d_between, ratio, nearest_zoo_env, snapped), per environment and per seen/unseen."""
    from dynadiff_fast.generative.vae import encode_zoo

    obs = dd.check_obs(obs)
    N, m = obs.shape[0], dd.model
    params = _check_params(params, N, m.param_mean.numel())
    seen = _check_seen(seen, N)
    _check_count("n_samples", n_samples)
    envs, zoo_params = zoo_environments(zoo)
    if zoo_params.shape[1] != params.shape[1]:
        raise ValueError(f"zoo: has {zoo_params.shape[1]} parameters per environment, params has {params.shape[1]}")
    scale = m.param_std.cpu().double()
    weights, own = true_centroid_weights(zoo_params, params, seen, scale)

    x_zoo = m.standardize_latent(encode_zoo(zoo, dd.vae, dd.graph, dd.normalizer, dd.device)).cpu().double()
    centroids = torch.stack([x_zoo[zoo.env_index == e].mean(0) for e in envs])  # [Z, L, d]
    true = torch.einsum("nz,zld->nld", weights, centroids)

    prompts = dd.prompts(obs).repeat_interleave(n_samples, dim=0)
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn((N * n_samples, *m.dit.latent_shape), generator=g).to(dd.device)
    z = m.sample_latents(prompts, noise, steps, generator=g)
    gen = m.standardize_latent(z).cpu().double().view(N, n_samples, *centroids.shape[1:])

    per_env = []
    for n in range(N):
        others = [e for e in range(len(envs)) if e != own[n]]
        d_gen = float(_sq_dist(gen[n], true[n]).mean())
        d_between = float(_sq_dist(centroids[others], true[n]).mean()) if others else None
        nearest = int(_sq_dist(centroids, gen[n].mean(0)).argmin())
        per_env.append({
            "params": params[n].tolist(),
            "seen": bool(seen[n]),
            "d_gen": d_gen,
            "d_between": d_between,
            "ratio": d_gen / max(d_between, 1e-12) if d_between is not None else None,
            "nearest_zoo_env": int(envs[nearest]),
            "snapped": nearest == int(((zoo_params - params[n]) / scale).norm(dim=1).argmin()),
        })  # fmt: skip
    return {"param_names": list(dd.manifest["param_names"]), "per_env": per_env, "summary": _latent_summary(per_env)}


def _mean(values: list[float | None]) -> float | None:
    values = [v for v in values if v is not None and math.isfinite(v)]
    return sum(values) / len(values) if values else None


def _latent_summary(per_env: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out = {}
    for name, flag in (("seen", True), ("unseen", False)):
        rows = [r for r in per_env if r["seen"] == flag]
        out[name] = {
            "n": len(rows),
            "ratio_mean": _mean([r["ratio"] for r in rows]),
            "snap_rate": _mean([float(r["snapped"]) for r in rows]),
        }
    return out


# ----------------------------------------------------------------------------------------------------------------
# Memorisation
# ----------------------------------------------------------------------------------------------------------------
def rms_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``[A, B]`` root mean squared differences between the rows of ``a [A, ...]`` and ``b [B, ...]``.

    Row by row, not ``torch.cdist``: that expands ``|a|^2 + |b|^2 - 2ab`` and loses the exact zero of a copy."""
    dims = tuple(range(1, b.dim()))
    return torch.stack([(b - r).square().mean(dims).sqrt() for r in a])


def nearest_within_between(dist: torch.Tensor, env: torch.Tensor) -> tuple[float | None, float | None]:
    """Mean over zoo experts of the distance (square ``dist [E, E]``) to the nearest other expert of the same
    environment (``env [E]``) and to the nearest expert of another environment; None when there is none."""
    same = env[:, None] == env[None, :]
    eye = torch.eye(len(env), dtype=torch.bool, device=env.device)
    within = dist.masked_fill(~same | eye, math.inf).min(1).values
    between = dist.masked_fill(same, math.inf).min(1).values
    return _mean(within.tolist()), _mean(between.tolist())


def weight_tokens(dd, experts) -> torch.Tensor:
    """Normalised node tokens ``[E, total_len]`` of a ``BatchedFNO``: what the VAE encodes."""
    return dd.normalizer.normalize(dd.graph.encode(experts).to(dd.device)).packed()[0]


@torch.no_grad()
def memorisation_audit(
    dd,
    zoo,
    obs: Any,
    frames: Any,
    n_samples: int = N_SAMPLES,
    seed: int = 0,
    steps: int = 50,
) -> dict[str, Any]:
    """Weight- and function-space distance of every generated expert to its nearest zoo expert, against the
    zoo's own within- and between-environment nearest-neighbour distances (module docstring)."""
    obs = dd.check_obs(obs)
    N = obs.shape[0]
    frames = _check_frames(dd, frames, N)
    _check_count("n_samples", n_samples)
    generated, _ = dd.generate(obs, n_samples, select="none", steps=steps, seed=seed)
    k = dd.n_candidates(n_samples)  # every candidate generation ranks (n_samples at each guidance scale)
    if generated.num_experts != N * k:
        raise ValueError(f"dd.generate: returned {generated.num_experts} experts, expected N * candidates = {N * k}")
    experts = zoo.batched().to(dd.device)
    env = zoo.env_index.to(dd.device)

    zoo_tokens = weight_tokens(dd, experts)
    w_gen = rms_distances(weight_tokens(dd, generated), zoo_tokens).view(N, k, -1)
    weight_within, weight_between = nearest_within_between(rms_distances(zoo_tokens, zoo_tokens), env)

    per_env = []
    for n in range(N):
        zoo_out = experts(frames[n])  # [E_zoo, B, C, H, W]
        gen_out = generated.select(list(range(n * k, (n + 1) * k)))(frames[n])
        within, between = nearest_within_between(rms_distances(zoo_out, zoo_out), env)
        per_env.append({
            "weight_nn": w_gen[n].min(1).values.tolist(),
            "function_nn": rms_distances(gen_out, zoo_out).min(1).values.tolist(),
            "nearest_zoo_env": env[w_gen[n].argmin(1)].tolist(),
            "function_within": within,
            "function_between": between,
        })  # fmt: skip
    reference = {
        "weight_within": weight_within,
        "weight_between": weight_between,
        "function_within": _mean([r["function_within"] for r in per_env]),
        "function_between": _mean([r["function_between"] for r in per_env]),
    }
    return {"per_env": per_env, "zoo": reference, "summary": _memorisation_summary(per_env, reference)}


def _memorisation_summary(per_env: list[dict[str, Any]], zoo: dict[str, float | None]) -> dict[str, Any]:
    """Means of the nearest-neighbour distances, as fractions of the zoo's within-environment ones, and the share
    of generated experts nearer to a zoo expert (in weights) than zoo experts of one environment are to each other."""
    weight = [v for r in per_env for v in r["weight_nn"]]
    function = [v for r in per_env for v in r["function_nn"]]
    w_mean, f_mean = _mean(weight), _mean(function)
    within = zoo["weight_within"]
    return {
        "n_generated": len(weight),
        "weight_nn_mean": w_mean,
        "function_nn_mean": f_mean,
        "weight_nn_over_within": w_mean / within if within else None,
        "function_nn_over_within": f_mean / zoo["function_within"] if zoo["function_within"] else None,
        "below_within_rate": _mean([float(v < within) for v in weight]) if within is not None else None,
    }


# ----------------------------------------------------------------------------------------------------------------
# Markdown
# ----------------------------------------------------------------------------------------------------------------
def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, list):
        return ", ".join(_fmt(x) for x in v)
    return str(v)


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def markdown(diag: dict[str, Any]) -> str:
    """Markdown tables of a ``prompter_r2``, ``latent_diagnostics`` or ``memorisation_audit`` result."""
    if not isinstance(diag, dict) or "per_env" not in diag:
        raise ValueError(
            f"diag: expected a result of prompter_r2, latent_diagnostics or memorisation_audit, got {diag!r:.80}"
        )
    rows = diag["per_env"]
    if "r2" in diag:
        names = diag["param_names"]
        return "\n\n".join([
            "**Prompter: parameters read back from the prompt**",
            _table(["parameter", "R2", "RMSE"], [[p, r, e] for p, r, e in zip(names, diag["r2"], diag["rmse"])]),
            _table(["env", "params", "predicted"], [[i, r["params"], r["predicted"]] for i, r in enumerate(rows)]),
        ])  # fmt: skip
    if "zoo" in diag:
        zoo, s = diag["zoo"], diag["summary"]
        return "\n\n".join([
            "**Memorisation: generated experts vs their nearest zoo expert**",
            _table(["space", "generated NN", "zoo within env", "zoo between envs", "NN / within"],
                   [["weights", s["weight_nn_mean"], zoo["weight_within"], zoo["weight_between"],
                     s["weight_nn_over_within"]],
                    ["function", s["function_nn_mean"], zoo["function_within"], zoo["function_between"],
                     s["function_nn_over_within"]]]),
            f"Generated experts nearer (weights) to a zoo expert than the zoo's experts of one environment are to "
            f"each other: {_fmt(s['below_within_rate'])} (share of {s['n_generated']}).",
            _table(["env", "weight NN", "function NN", "nearest zoo env", "zoo function within"],
                   [[i, r["weight_nn"], r["function_nn"], r["nearest_zoo_env"], r["function_within"]]
                    for i, r in enumerate(rows)]),
        ])  # fmt: skip
    s = diag["summary"]
    return "\n\n".join([
        "**Latents: generated vs true zoo centroid (standardised latent space)**",
        _table(["split", "envs", "mean d_gen / d_between", "snap rate"],
               [[k, s[k]["n"], s[k]["ratio_mean"], s[k]["snap_rate"]] for k in ("seen", "unseen")]),
        _table(["env", "params", "seen", "d_gen", "d_between", "ratio", "nearest zoo env", "snapped"],
               [[i, r["params"], r["seen"], r["d_gen"], r["d_between"], r["ratio"], r["nearest_zoo_env"],
                 r["snapped"]] for i, r in enumerate(rows)]),
    ])  # fmt: skip
