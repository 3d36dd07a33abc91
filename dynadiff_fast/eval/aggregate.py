"""The statistics of a multi-seed benchmark: several per-seed ``results.json`` (``eval.report``) -> one verdict.

One seed is one full run (dataset split, zoo, DynaDiff, baselines, evaluation); a single seed says little
about whether DynaDiff really beats a baseline, so this module pools seeds two ways:

- per method and domain, the per-seed RMSE (mean over that seed's environments) -> mean over seeds and a
  Student-t 95% interval over seeds (the seed-to-seed spread of the whole pipeline);
- per method against the reference (DynaDiff, select="prefix"), the paired ratio method RMSE / DynaDiff RMSE
  per (seed, environment) -> mean ratio, bootstrap 95% interval of that mean, the fraction of pairs DynaDiff
  wins, and a two-sided Wilcoxon signed-rank test on the log-ratios. Pairing removes the environment-to-
  environment spread (some environments are hard for every method), which dominates the per-seed means.

Domains (``DOMAINS4``): the two protocol domains, plus the two sub-splits of out_domain (unseen environments
inside / outside the seen parameter range), read from out_domain's per-environment entries.

Output (``aggregate``; ``BENCH_FORMAT``)::

    {"format", "version", "system", "preset", "seeds", "reference",
     "methods": {name: {domain: {"rmse": {"mean", "ci95": [lo, hi], "per_seed": [.. | None], "n_seeds"},
                                 # methods with ensemble scores (K >= 2, ``eval.probabilistic``), the same four:
                                 "crps": {...}, "spread_skill": {...}, "coverage90": {...}}}},
     "paired": {name: {domain: {"ratio_mean", "ratio_ci95", "win_rate", "n_pairs", "p_value"}}},
     "controls": {domain: {"ratio_mean", "ratio_ci95", "win_rate", "n_pairs"}},   # shuffled vs none
     "oracle": {domain: {"ratio_mean", "ratio_ci95", "win_rate", "n_pairs"}},     # DynaDiff vs one_per_env
     "targets": {domain: {"vs_one_per_env", "vs_best_gradient_free", "best_gradient_free", "control"}},
     "verdict": [sentence, ...]}

Statistics that cannot be computed (no seed, no pair) are None, so the document stays valid JSON.
"""

from __future__ import annotations

import math
from pathlib import Path

from dynadiff_fast import io

BENCH_FORMAT = "dynadiff-benchmark-results"
BENCH_VERSION = 1
DOMAINS4 = ("in_domain", "out_domain", "unseen_in", "unseen_out")
VERDICT_ORDER = ("unseen_in", "unseen_out", "in_domain", "out_domain")  # the unseen environments are the claim
REFERENCE_METHOD = "dynadiff_prefix"
ORACLE = "one_per_env"  # trained on each test environment's own trajectories: an upper reference, not a rival
CONTROL, CONTROL_BASE = "dynadiff_shuffled", "dynadiff_none"  # prompts of other environments vs the real one
GRADIENT_FREE = ("base", "nn_prefix", "soup_uniform", "soup_prefix", "ccm", "param_conditioned_inferred")
ENSEMBLE_METRICS = ("crps", "spread_skill", "coverage90")  # of the methods with K >= 2 predictors per environment

TARGET_VS_ORACLE = 1.25  # DynaDiff RMSE / one_per_env RMSE at most this
TARGET_MARGIN = 1.03  # best gradient-free RMSE / DynaDiff RMSE at least this (and its CI above 1)
TARGET_CONTROL = 1.20  # shuffled-prompt RMSE / real-prompt (select=none) RMSE at least this

_SUBSPLITS = {"unseen_in": "out_domain", "unseen_out": "out_domain"}


def per_env_rmse(doc: dict, method: str, domain: str, metric: str = "rmse") -> dict[int, float] | None:
    """``{env id: RMSE}`` (or another per-environment ``metric``, e.g. an ensemble's ``crps``) of ``method`` on
    ``domain`` (one of ``DOMAINS4``) in one per-seed document.

    unseen_in / unseen_out are out_domain's per-environment entries of that sub-split. None when the method
    is absent, failed (``{"error": ...}``), has no environment in the (sub-)split, or no value of ``metric``.
    """
    if domain not in DOMAINS4:
        raise ValueError(f"domain: expected one of {DOMAINS4}, got {domain!r}")
    entry = doc.get("methods", {}).get(method, {}).get(_SUBSPLITS.get(domain, domain))
    if not entry or "error" in entry or entry.get("per_env") is None:
        return None
    rows = [r for r in entry["per_env"] if domain not in _SUBSPLITS or r["split"] == domain]
    return {int(r["env"]): float(r[metric]) for r in rows if r.get(metric) is not None} or None


def _finite(x) -> float | None:
    """A float for JSON, or None (NaN/inf are not JSON)."""
    return float(x) if x is not None and math.isfinite(x) else None


def _seed_value(doc: dict, method: str, domain: str, metric: str = "rmse") -> float | None:
    env = per_env_rmse(doc, method, domain, metric)
    return None if env is None else sum(env.values()) / len(env)


def t_interval(values: list[float]) -> tuple[float | None, list[float] | None]:
    """Mean and Student-t 95% interval of ``values``; one value -> ``[mean, mean]`` (no spread to estimate);
    none -> ``(None, None)``."""
    import numpy as np
    from scipy import stats

    if not values:
        return None, None
    x = np.asarray(values, dtype=np.float64)
    mean = float(x.mean())
    if x.size < 2:
        return mean, [mean, mean]
    half = float(stats.t.ppf(0.975, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))
    return mean, [mean - half, mean + half]


def _seed_stats(docs: list[dict], method: str, domain: str) -> dict:
    """``{"rmse": {...}}``, plus ``crps``, ``spread_skill``, ``coverage90`` (each a per-seed mean over environments,
    aggregated like the RMSE) for a method with ensemble scores in some seed."""
    out = {}
    for metric in ("rmse", *ENSEMBLE_METRICS):
        per_seed = [_seed_value(d, method, domain, metric) for d in docs]
        if metric != "rmse" and all(v is None for v in per_seed):
            continue
        mean, ci = t_interval([v for v in per_seed if v is not None])
        out[metric] = {"mean": mean, "ci95": ci, "per_seed": per_seed, "n_seeds": sum(v is not None for v in per_seed)}
    return out


def _ratios(docs: list[dict], method: str, reference: str, domain: str) -> list[float]:
    """method RMSE / reference RMSE for every (seed, environment) both have; a seed where either failed
    adds nothing. Non-positive RMSEs are skipped: their ratio or log-ratio is undefined."""
    out = []
    for doc in docs:
        m, r = per_env_rmse(doc, method, domain), per_env_rmse(doc, reference, domain)
        if m is None or r is None:
            continue
        out += [m[e] / r[e] for e in sorted(m.keys() & r.keys()) if m[e] > 0 and r[e] > 0]
    return out


def paired(ratios: list[float], *, n_boot: int = 2000, rng_seed: int = 0) -> dict:
    """Paired statistics of ratios method / reference: mean, percentile-bootstrap 95% interval of the mean
    (resampling pairs; ``[mean, mean]`` with < 2 pairs or no spread), fraction of pairs with ratio > 1 (the
    reference strictly better) and the two-sided Wilcoxon signed-rank p-value of the log-ratios (None with
    < 2 pairs or all log-ratios zero)."""
    import numpy as np
    from scipy import stats

    if not ratios:
        return {"ratio_mean": None, "ratio_ci95": None, "win_rate": None, "n_pairs": 0, "p_value": None}
    x = np.asarray(ratios, dtype=np.float64)
    mean = float(x.mean())
    if x.size < 2 or np.ptp(x) == 0:
        ci = [mean, mean]
    else:
        # percentile, not BCa: BCa's jackknife degenerates on the heavily tied ratios of a few seeds
        res = stats.bootstrap(
            (x,), np.mean, n_resamples=n_boot, method="percentile", vectorized=True, rng=np.random.default_rng(rng_seed)
        )
        ci = [float(res.confidence_interval.low), float(res.confidence_interval.high)]
    logr = np.log(x)
    p = None if x.size < 2 or not logr.any() else _finite(stats.wilcoxon(logr).pvalue)
    return {
        "ratio_mean": mean,
        "ratio_ci95": ci,
        "win_rate": float((x > 1).mean()),
        "n_pairs": int(x.size),
        "p_value": p,
    }


def _check(docs: list[dict], seeds: list[int], system: str) -> None:
    if not docs:
        raise ValueError("docs: no per-seed results given")
    if len(docs) != len(seeds):
        raise ValueError(f"docs: {len(docs)} results documents for {len(seeds)} seeds {list(seeds)}")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds: {list(seeds)} repeats a seed; its pairs would count twice")
    for s, d in zip(seeds, docs):
        if d.get("system") != system:
            raise ValueError(f"docs: seed {s}'s results are for {d.get('system')}, expected {system}")


def _method_names(docs: list[dict]) -> list[str]:
    """Every method of any seed, in first-seen order."""
    return list(dict.fromkeys(k for d in docs for k in d.get("methods", {})))


def aggregate(
    docs: list[dict],
    seeds: list[int],
    *,
    system: str,
    preset: str,
    reference: str = REFERENCE_METHOD,
    n_boot: int = 2000,
    rng_seed: int = 0,
) -> dict:
    """The benchmark document (module docstring) from one ``results.json`` per seed (``docs[i]`` is seed
    ``seeds[i]``). Each bootstrap uses a fresh generator seeded ``rng_seed``, so every interval is
    reproducible and independent of which other methods are in the documents."""
    _check(docs, seeds, system)
    names = _method_names(docs)
    methods = {k: {d: _seed_stats(docs, k, d) for d in DOMAINS4} for k in names}
    boot = {"n_boot": n_boot, "rng_seed": rng_seed}
    pairs = {k: {d: paired(_ratios(docs, k, reference, d), **boot) for d in DOMAINS4} for k in names if k != reference}

    def four(stats: dict) -> dict:
        return {k: stats[k] for k in ("ratio_mean", "ratio_ci95", "win_rate", "n_pairs")}

    controls = {d: four(paired(_ratios(docs, CONTROL, CONTROL_BASE, d), **boot)) for d in DOMAINS4}
    oracle = {d: four(paired(_ratios(docs, reference, ORACLE, d), **boot)) for d in DOMAINS4}
    targets = {d: _targets(pairs, controls[d], oracle[d], d) for d in DOMAINS4}
    agg = {
        "format": BENCH_FORMAT,
        "version": BENCH_VERSION,
        "system": system,
        "preset": preset,
        "seeds": list(seeds),
        "reference": reference,
        "methods": methods,
        "paired": pairs,
        "controls": controls,
        "oracle": oracle,
        "targets": targets,
    }
    agg["verdict"] = verdict(agg)
    return agg


def best_gradient_free(pairs: dict, domain: str) -> str | None:
    """The gradient-free baseline hardest for the reference on ``domain``: the lowest paired ratio (matched
    environments and seeds, unlike a comparison of means over whatever seeds each method finished)."""
    scored = [
        (pairs[k][domain]["ratio_mean"], k)
        for k in GRADIENT_FREE
        if k in pairs and pairs[k][domain]["ratio_mean"] is not None
    ]
    return min(scored)[1] if scored else None


def _targets(pairs: dict, control: dict, oracle: dict, domain: str) -> dict:
    """Targets met per domain; None where the methods needed were not run. Beating the best gradient-free
    baseline needs a margin of ``TARGET_MARGIN`` and an interval above 1 (a margin within noise is no win)."""
    best = best_gradient_free(pairs, domain)
    gf = None if best is None else pairs[best][domain]
    return {
        "vs_one_per_env": None if oracle["ratio_mean"] is None else oracle["ratio_mean"] <= TARGET_VS_ORACLE,
        "vs_best_gradient_free": None if gf is None else gf["ratio_mean"] >= TARGET_MARGIN and gf["ratio_ci95"][0] > 1,
        "best_gradient_free": best,
        "control": None if control["ratio_mean"] is None else control["ratio_mean"] >= TARGET_CONTROL,
    }


def _ci(ci: list[float] | None, digits: int = 3) -> str:
    return "n/a" if ci is None else f"[{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"


def _vs_baseline(agg: dict, domain: str) -> str:
    best = agg["targets"][domain]["best_gradient_free"]
    if best is None:
        return f"{domain}: no gradient-free baseline has results paired with DynaDiff."
    s = agg["paired"][best][domain]
    r, (lo, hi) = s["ratio_mean"], s["ratio_ci95"]
    detail = f"ratio {best} RMSE / DynaDiff RMSE {r:.3f}, CI {_ci(s['ratio_ci95'])}, {s['n_pairs']} pairs"
    if lo > 1:
        return f"{domain}: DynaDiff is better than {best}, the best gradient-free baseline, by {100 * (r - 1):.1f}% ({detail})."
    if hi < 1:
        return f"{domain}: DynaDiff is worse than {best}, the best gradient-free baseline, by {100 * (1 - r):.1f}% ({detail})."
    return f"{domain}: DynaDiff and {best}, the best gradient-free baseline, are not distinguishable ({detail})."


def _vs_oracle(agg: dict, domain: str) -> str:
    s = agg["oracle"][domain]
    if s["ratio_mean"] is None:
        return f"{domain}: {ORACLE} has no results paired with DynaDiff."
    met = "within" if agg["targets"][domain]["vs_one_per_env"] else "above"
    return (
        f"{domain}: DynaDiff RMSE / {ORACLE} RMSE is {s['ratio_mean']:.3f} (CI {_ci(s['ratio_ci95'])}), "
        f"{met} the {TARGET_VS_ORACLE} target."
    )


def _control(agg: dict, domain: str) -> str:
    s = agg["controls"][domain]
    if s["ratio_mean"] is None:
        return f"{domain}: the shuffled-prompt control ({CONTROL} vs {CONTROL_BASE}) has no paired results."
    worse = 100 * (s["ratio_mean"] - 1)
    met = "meets" if agg["targets"][domain]["control"] else "misses"
    return (
        f"{domain}: with shuffled prompts ({CONTROL}) the RMSE is {worse:.1f}% higher than with the real prompt "
        f"({CONTROL_BASE}; ratio CI {_ci(s['ratio_ci95'])}), which {met} the {100 * (TARGET_CONTROL - 1):.1f}% target."
    )


def verdict(agg: dict) -> list[str]:
    """Plain sentences per domain (unseen environments first): DynaDiff vs the best gradient-free baseline,
    vs One-per-Env, and whether its prompt matters (shuffled-prompt control)."""
    ref = agg["methods"].get(agg["reference"])
    if ref is None or not any(ref[d]["rmse"]["n_seeds"] for d in DOMAINS4):
        return [f"DynaDiff ({agg['reference']}) produced no results in any seed; no comparison can be made."]
    lines = []
    for d in VERDICT_ORDER:
        if not ref[d]["rmse"]["n_seeds"]:
            lines.append(f"{d}: DynaDiff produced no results in any seed.")
            continue
        lines += [_vs_baseline(agg, d), _vs_oracle(agg, d), _control(agg, d)]
    return lines


def _num(x: float | None, digits: int = 4) -> str:
    return "failed" if x is None else f"{x:.{digits}f}"


def _domain_table(agg: dict, domain: str) -> list[str]:
    ref = agg["reference"]
    rows = sorted(
        agg["methods"].items(),
        key=lambda kv: (kv[1][domain]["rmse"]["mean"] is None, kv[1][domain]["rmse"]["mean"] or 0.0),
    )
    lines = [
        f"### {domain}",
        "",
        "| method | RMSE mean | 95% CI | per-seed values | ratio vs DynaDiff [CI] | DynaDiff win rate |",
        "|---|---|---|---|---|---|",
    ]
    for name, per in rows:
        s = per[domain]["rmse"]
        seeds = ", ".join(_num(v) for v in s["per_seed"])
        if name == ref:
            ratio, win = "1 (reference)", "-"
        else:
            p = agg["paired"][name][domain]
            ratio = "n/a" if p["ratio_mean"] is None else f"{p['ratio_mean']:.3f} {_ci(p['ratio_ci95'])}"
            win = "n/a" if p["win_rate"] is None else f"{100 * p['win_rate']:.1f}% of {p['n_pairs']}"
        label = f"**{name}**" if name == ref else name
        lines.append(f"| {label} | {_num(s['mean'])} | {_ci(s['ci95'], 4)} | {seeds} | {ratio} | {win} |")
    return lines


def _targets_table(agg: dict) -> list[str]:
    def cell(ok: bool | None) -> str:
        return "n/a" if ok is None else ("met" if ok else "missed")

    lines = [
        f"| domain | DynaDiff / one_per_env <= {TARGET_VS_ORACLE} | best gradient-free / DynaDiff >= "
        f"{TARGET_MARGIN}, CI > 1 | best gradient-free | shuffled / none >= {TARGET_CONTROL} |",
        "|---|---|---|---|---|",
    ]
    for d in DOMAINS4:
        t = agg["targets"][d]
        lines.append(
            f"| {d} | {cell(t['vs_one_per_env'])} | {cell(t['vs_best_gradient_free'])} | "
            f"{t['best_gradient_free'] or 'n/a'} | {cell(t['control'])} |"
        )
    return lines


def _calibration_table(agg: dict) -> list[str]:
    """Per ensemble method and domain: CRPS, spread/skill and 90% coverage, mean [95% CI] over seeds."""
    rows = [(k, per) for k, per in agg["methods"].items() if any("crps" in per[d] for d in DOMAINS4)]
    if not rows:
        return []
    lines = [
        "Fair CRPS, spread/skill (1 = calibrated, below = over-confident) and PIT coverage of the central 90% "
        "interval (nominal 0.9), per seed the mean over environments; mean [95% CI] over seeds.",
        "",
        "| method | domain | CRPS | spread/skill | coverage 90% |",
        "|---|---|---|---|---|",
    ]
    for key, per in rows:
        for d in DOMAINS4:
            cells = [
                f"{s['mean']:.4f} {_ci(s['ci95'], 4)}" if (s := per[d].get(m)) and s["mean"] is not None else "n/a"
                for m in ENSEMBLE_METRICS
            ]
            lines.append(f"| {key} | {d} | " + " | ".join(cells) + " |")
    return lines


def _stage_table(stage_times: dict) -> list[str]:
    stages = list(dict.fromkeys(s for per in stage_times.values() for s in per))
    lines = ["| seed | " + " | ".join(stages) + " | total |", "|---|" + "---|" * (len(stages) + 1)]
    for seed, per in stage_times.items():
        cells = [f"{per[s]:.1f}" if s in per else "-" for s in stages]
        lines.append(f"| {seed} | " + " | ".join(cells) + f" | {sum(per.values()):.1f} |")
    return lines


def report_markdown(agg: dict, stage_times: dict | None = None, diagnostics: dict | None = None) -> str:
    """report.md of a benchmark: verdict, one table per domain, targets; optionally stage wall-clock
    (``{seed: {stage: seconds}}``) and free-form diagnostics (``{section title: markdown}``, verbatim)."""
    parts = [
        f"# DynaDiff benchmark: {agg['system']}, preset {agg['preset']}, {len(agg['seeds'])} seeds",
        "",
        f"Seeds: {', '.join(map(str, agg['seeds']))}. Reference: `{agg['reference']}`. RMSE per seed is the mean over "
        "that seed's environments; the 95% CI is Student-t over seeds. Ratios are method RMSE / DynaDiff RMSE per "
        "(seed, environment), mean with a bootstrap 95% CI; above 1 means DynaDiff is better. The win rate is the "
        "fraction of those pairs where DynaDiff's RMSE is lower.",
        "",
        "## Verdict",
        "",
        *(f"- {s}" for s in agg["verdict"]),
        "",
        "## Results",
    ]
    for d in DOMAINS4:
        parts += ["", *_domain_table(agg, d)]
    parts += ["", "## Targets", "", *_targets_table(agg)]
    if calibration := _calibration_table(agg):
        parts += ["", "## Uncertainty: the ensembles", "", *calibration]
    if stage_times:
        parts += ["", "## Stage wall-clock (s)", "", *_stage_table(stage_times)]
    for title, body in (diagnostics or {}).items():
        parts += ["", f"## {title}", "", body]
    return "\n".join(parts) + "\n"


def summary_figure(agg: dict, path: str | Path) -> None:
    """PNG: one panel per domain, methods sorted by mean RMSE with their 95% CI over seeds, the reference in
    red, one_per_env as a dashed line. Written atomically."""
    from matplotlib.figure import Figure  # a bare Figure renders with Agg; no pyplot state, no backend switch
    from matplotlib.ticker import NullFormatter

    fig = Figure(figsize=(16, 0.35 * len(agg["methods"]) + 2.0), layout="constrained")
    axes = fig.subplots(1, len(DOMAINS4), squeeze=False)[0]
    for ax, d in zip(axes, DOMAINS4):
        rows = sorted(
            (
                (s["mean"], s["ci95"], k)
                for k, per in agg["methods"].items()
                if (s := per[d]["rmse"])["mean"] is not None
            ),
            reverse=True,  # best at the top
        )
        ax.set_title(d)
        if not rows:
            ax.text(0.5, 0.5, "no results", ha="center", va="center", transform=ax.transAxes)
            continue
        for y, (mean, (lo, hi), k) in enumerate(rows):
            ref = k == agg["reference"]
            ax.errorbar(
                mean,
                y,
                xerr=[[mean - lo], [hi - mean]],
                fmt="o",
                color="tab:red" if ref else "tab:blue",
                ms=8 if ref else 5,
                capsize=3,
            )
            if k == ORACLE:
                ax.axvline(mean, color="gray", ls="--", lw=1)
        ax.set_yticks(range(len(rows)), [k for *_, k in rows])
        # log scale only when every interval is positive: a t interval over few seeds can cross zero
        if all(lo > 0 for _, (lo, _), _ in rows):
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())  # minor log labels overlap on a narrow panel
        ax.set_xlabel("RMSE (mean, 95% CI over seeds)")
    fig.suptitle(f"{agg['system']} ({agg['preset']}, {len(agg['seeds'])} seeds)")
    with io.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
