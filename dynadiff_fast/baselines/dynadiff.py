"""DynaDiff (the method): expert weights generated from the observed frames (``DynaDiff.generate``).

dynadiff_prefix       K samples per environment (at each of the run's guidance scales, ``dit.guidance``), the
                      one with the best prefix score on the observed frames kept (select="prefix"; the score
                      every prefix-based method selects by).
dynadiff_none         all K samples of the plain conditional sampler (guidance scale 1) kept (select="none"); metrics average over the samples, and the std
                      over samples is part of the reported spread.
dynadiff_shuffled     control: each environment prompted with another environment's observations
                      (prompt_mode="shuffled"), select="none".
dynadiff_zero_prompt  control: a zero prompt (prompt_mode="zero"), select="none".
dynadiff_ensemble     the K samples of the one guidance scale (of the run's) whose K-member ensemble has the lowest
                      fair CRPS on the observed frames (select="ensemble"): DynaDiff's predictive distribution, scored
                      like every K >= 2 method by CRPS, spread/skill and coverage (``eval.probabilistic``).
The controls use select="none" so prefix selection cannot hide a prompt that carries no information;
compare them with dynadiff_none. The three select="none" variants measure the sampler itself, at guidance
scale 1: the guidance scales are candidates for the prefix ranking (and would multiply their rollout cost).
"""

from __future__ import annotations

from dynadiff_fast.baselines.common import Adapted, Context, Timer, adapted_experts
from dynadiff_fast.eval.protocol import Task

# result key -> (select, prompt_mode, guidance: None = the run's scales)
VARIANTS = {
    "dynadiff_prefix": ("prefix", "real", None),
    "dynadiff_none": ("none", "real", 1.0),
    "dynadiff_shuffled": ("none", "shuffled", 1.0),
    "dynadiff_zero_prompt": ("none", "zero", 1.0),
    "dynadiff_ensemble": ("ensemble", "real", None),
}
NAMES = tuple(VARIANTS)


def load(ctx: Context):
    from dynadiff_fast.generative.dynadiff import DynaDiff

    if ctx.run_dir is None:
        raise ValueError("dynadiff: no DynaDiff run given (--run RUN: the folder `dynadiff train all` wrote)")
    return DynaDiff.load(ctx.run_dir, device=ctx.device)


def run(ctx: Context, task: Task) -> dict[str, Adapted]:
    dd = ctx.cached("dynadiff", lambda: load(ctx))
    obs = task.obs.to(ctx.device)
    out = {}
    for key, (select, mode, guidance) in VARIANTS.items():
        if ctx.keys is not None and key not in ctx.keys:
            continue
        with Timer() as t:
            experts, _ = dd.generate(obs, n_samples=ctx.n_samples, select=select, seed=ctx.seed, prompt_mode=mode,
                                     guidance=guidance)  # fmt: skip
        k = {"prefix": 1, "ensemble": ctx.n_samples}.get(select) or dd.n_candidates(ctx.n_samples, guidance)
        info = {"select": select, "prompt_mode": mode, "guidance": list(dd.guidance_scales(guidance))}
        out[key] = adapted_experts(experts.to(ctx.device), t.seconds, k, **info)
    return out
