"""results.json and report.md: the numbers, the setup, and a plain statement of where DynaDiff wins and loses.

results.json (``RESULTS_FORMAT``)::

    {"format", "version", "system", "dataset", "zoo", "run", "param_names", "channel_names",
     "protocol": {...}, "budget": {...}, "config": {...}, "versions": {...},
     "domains": {"in_domain"|"out_domain": {"envs", "params", "split", "test_trajs", "steps"}},
     "methods": {result_key: {"in_domain"|"out_domain": {
         "rmse": {"mean", "std"}, "ssim": {"mean", "std"} | null, "curve_rmse": [T], "curve_ssim": [T] | null,
         "per_env": [{"env", "params", "split", "rmse", "rmse_std", "ssim", "ssim_std"}],
         "by_split": {split: {"rmse": {...}, "ssim": {...}}}, "adapt_seconds", "samples_per_env", "info",
         "n_env", "n_traj", "steps",
         # methods with K >= 2 predictors per environment (ensembles; ``eval.probabilistic``):
         "crps"|"spread_skill"|"coverage50"|"coverage90": {"mean", "std"}, "rank_hist": [K+1], "ensemble_size",
         "curve_crps"|"curve_spread"|"curve_skill"|"curve_spread_skill": [T]}  |  {"error": "..."}}},
     "sanity": {result_key: "diagnosis"}}

Sanity rule: a method whose in-domain RMSE exceeds ``SANITY_RATIO`` x the unadapted base model's is flagged
(``sanity``) with a diagnosis, marked in the table and left out of the verdict's ranking: it is broken on this
setting (diverging rollouts, a search that chose a bad point), and ranking it would be noise.

Means are over environments (x samples for methods with several predictors per environment); std is
the spread over the same. RMSE on standardised fields, SSIM per ``metrics``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from dynadiff_fast import config as config_mod
from dynadiff_fast import io
from dynadiff_fast.eval import calibration
from dynadiff_fast.eval.protocol import DOMAINS

RESULTS_FORMAT = "dynadiff-eval-results"
RESULTS_VERSION = 1
DYNADIFF = "dynadiff_prefix"
CONTROLS = ("dynadiff_shuffled", "dynadiff_zero_prompt")
REFERENCE = "one_per_env"  # trained on the test environment's own trajectories: an upper reference, not a rival
BASE = "base"
SANITY_RATIO = 2.0


def results_document(results: dict, ds, cfg, zoo_dir) -> dict:
    """Add the setup (dataset, zoo, run, protocol, budgets, versions) to ``evaluate``'s results."""
    from dynadiff_fast.baselines.common import budget_for

    return {
        "format": RESULTS_FORMAT,
        "version": RESULTS_VERSION,
        "system": ds.system_name,
        "dataset": str(getattr(ds, "path", "")),
        "zoo": str(zoo_dir),
        "run": None if cfg.run is None else str(cfg.run),
        "param_names": list(ds.param_names),
        "channel_names": list(ds.channel_names),
        "protocol": dataclasses.asdict(cfg.protocol),
        "budget": dataclasses.asdict(budget_for(cfg.preset, cfg.budget)),
        "config": config_mod.to_dict(cfg),
        "versions": config_mod.versions(),
        **results,
        "sanity": sanity_flags(results),
    }


def sanity_flags(results: dict) -> dict[str, str]:
    """``{result_key: diagnosis}`` of the methods whose in-domain RMSE is above ``SANITY_RATIO`` x the base
    model's (``results["methods"]``); empty when the base model was not run."""
    methods = results["methods"]
    base = methods.get(BASE, {}).get("in_domain")
    if not _ok(base):
        return {}
    b, curve_b = base["rmse"]["mean"], base["curve_rmse"]
    flags = {}
    for key, per in methods.items():
        e = per.get("in_domain")
        if key == BASE or not _ok(e) or not e["rmse"]["mean"] > SANITY_RATIO * b:
            continue
        r = e["rmse"]["mean"]
        step = next((t + 1 for t, (x, y) in enumerate(zip(e["curve_rmse"], curve_b)) if x > SANITY_RATIO * y), None)
        worse = sum(x["rmse"] > y["rmse"] for x, y in zip(e["per_env"], base["per_env"]))
        flags[key] = (
            f"in-domain RMSE {r:.4f} is {r / b:.1f}x the unadapted base model's {b:.4f} (limit {SANITY_RATIO:g}x): "
            f"worse than the base on {worse} of {len(e['per_env'])} seen environments"
            + (f", its error above {SANITY_RATIO:g}x the base's from rollout step {step} on" if step else "")
            + "; the method is broken on this setting, not ranked"
        )
    return flags


def _ok(entry: dict | None) -> bool:
    return bool(entry) and "error" not in entry and entry.get("rmse") is not None


def _fmt(stat: dict | None, digits: int = 4) -> str:
    if not stat:
        return "n/a"
    return f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}"


def table(doc: dict) -> str:
    """The results as a markdown table: RMSE and SSIM per domain, and the adaptation wall-clock."""
    head = "| method | in-domain RMSE | in-domain SSIM | out-domain RMSE | out-domain SSIM | adapt s (in / out) |"
    lines = [head, "|" + "---|" * 6]
    flagged = doc.get("sanity", {})
    for key, per in doc["methods"].items():
        cells = []
        for d in DOMAINS:
            e = per.get(d)
            if not _ok(e):
                reason = (e or {}).get("error", "not run")
                cells += [f"failed: {reason[:60]}", ""]
                continue
            cells += [_fmt(e["rmse"]), _fmt(e["ssim"], 3)]
        secs = " / ".join(f"{per[d]['adapt_seconds']:.2f}" if _ok(per.get(d)) else "-" for d in DOMAINS)
        name = f"{key} (flagged, see Sanity check)" if key in flagged else key
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {secs} |")
    return "\n".join(lines)


def _rmse(doc: dict, key: str, domain: str) -> float | None:
    e = doc["methods"].get(key, {}).get(domain)
    return e["rmse"]["mean"] if _ok(e) else None


def _env_wins(doc: dict, a: str, b: str, domain: str) -> tuple[int, int]:
    """Environments where method ``a`` has a lower RMSE than ``b``, and how many were compared."""
    ea, eb = doc["methods"][a][domain]["per_env"], doc["methods"][b][domain]["per_env"]
    wins = sum(x["rmse"] < y["rmse"] for x, y in zip(ea, eb, strict=True))
    return wins, len(ea)


def verdict(doc: dict) -> list[str]:
    """Plain sentences: where DynaDiff (select="prefix") wins and where it loses, per domain and sub-split,
    against every other method, and whether its prompt matters (controls)."""
    lines: list[str] = []
    methods = doc["methods"]
    if DYNADIFF not in methods or not any(_ok(methods[DYNADIFF].get(d)) for d in DOMAINS):
        errors = {d: methods.get(DYNADIFF, {}).get(d, {}).get("error", "not run") for d in DOMAINS}
        return [f"DynaDiff produced no results ({errors}); no comparison can be made."]
    flagged = doc.get("sanity", {})
    rivals = [k for k in methods if not k.startswith("dynadiff") and k != REFERENCE and k not in flagged]
    for d in DOMAINS:
        ours = _rmse(doc, DYNADIFF, d)
        if ours is None:
            lines.append(f"- {d}: DynaDiff failed: {methods[DYNADIFF][d].get('error')}.")
            continue
        scored = sorted((r, k) for k in rivals if (r := _rmse(doc, k, d)) is not None)
        beaten = [k for r, k in scored if r > ours]
        better = [k for r, k in scored if r < ours]
        tied = [k for r, k in scored if r == ours]
        rank = len(better) + 1
        lines.append(
            f"- **{d}**: DynaDiff RMSE {ours:.4f} ranks {rank} of {len(scored) + 1} (One-per-Env excluded). "
            + (f"It WINS against {', '.join(beaten)}. " if beaten else "It beats no baseline. ")
            + (f"It LOSES to {', '.join(better)}." if better else "No baseline beats it.")
            + (f" Tied with {', '.join(tied)}." if tied else "")
        )
        if scored:
            best_r, best_k = scored[0]
            wins, n = _env_wins(doc, DYNADIFF, best_k, d) if best_k != DYNADIFF else (0, 0)
            lines.append(f"  - per environment vs the best baseline ({best_k}): DynaDiff lower on {wins} of {n}.")
        ref = _rmse(doc, REFERENCE, d)
        if ref is not None:
            wins, n = _env_wins(doc, DYNADIFF, REFERENCE, d)
            gap = 100 * (ours - ref) / ref if ref > 0 else float("nan")
            lines.append(
                f"  - vs One-per-Env (upper reference, RMSE {ref:.4f}): {gap:+.1f}% RMSE; "
                f"DynaDiff lower on {wins} of {n} environments."
            )
        for sub, v in methods[DYNADIFF][d].get("by_split", {}).items():
            if len(methods[DYNADIFF][d]["by_split"]) < 2:
                break
            others = sorted(
                (methods[k][d]["by_split"][sub]["rmse"]["mean"], k) for k in rivals if _ok(methods[k].get(d))
            )
            ours_sub = v["rmse"]["mean"]
            if others:
                r, k = others[0]
                word = "wins" if ours_sub < r else "loses"
                lines.append(f"  - {sub}: DynaDiff RMSE {ours_sub:.4f} vs best baseline {k} {r:.4f}: DynaDiff {word}.")
        none = _rmse(doc, "dynadiff_none", d)
        for c in CONTROLS:
            rc = _rmse(doc, c, d)
            if rc is not None and none is not None:
                lines.append(
                    f"  - control {c}: RMSE {rc:.4f} vs {none:.4f} with the real prompt (select=none): "
                    + ("the prompt carries information." if rc > none else "the prompt does NOT help here.")
                )
    return lines


def markdown(doc: dict) -> str:
    p = doc["protocol"]
    dom = doc["domains"]
    setup = [
        f"- system: {doc['system']}; dataset: `{doc['dataset']}`; zoo: `{doc['zoo']}`; DynaDiff run: `{doc['run']}`",
        f"- environments: in-domain {len(dom['in_domain']['envs'])} (seen, new initial conditions), "
        f"out-domain {len(dom['out_domain']['envs'])} (unseen; inside and outside the seen range)",
        f"- protocol: rollout of {dom['in_domain']['steps']} steps from frame 0 of each of "
        f"{len(dom['in_domain']['test_trajs'])} test trajectories per environment; observations: the first "
        f"{p['obs_len']} frames of training trajectory {p['obs_traj']} of the test environment",
        "- metrics: RMSE on per-channel standardised fields (per step over channels and space, averaged over "
        "steps and trajectories); SSIM (Gaussian 11x11 window, data range = range of the true frame, "
        "channel-averaged) where frames are 2-D; mean ± std over environments (x samples)",
        f"- baseline budgets: {doc['budget']}",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in doc["versions"].items()),
    ]
    failures = [
        f"- {k} / {d}: {e['error']}" for k, per in doc["methods"].items() for d, e in per.items() if "error" in e
    ]
    parts = [
        f"# DynaDiff evaluation: {doc['system']}",
        "",
        table(doc),
        "",
        "## Where DynaDiff wins and where it loses",
        "",
        *verdict(doc),
        "",
        *calibration.markdown(doc),
        "",
        "## Setup",
        "",
        *setup,
    ]
    if failures:
        parts += ["", "## Methods that failed", "", *failures]
    if doc.get("sanity"):
        parts += ["", "## Sanity check", "", *(f"- {k}: {why}" for k, why in doc["sanity"].items())]
    parts += ["", "Figures: `figures/` (rollout panels, error vs step, error per environment)."]
    return "\n".join(parts) + "\n"


def write(out: str | Path, doc: dict) -> None:
    """Atomically write ``out/results.json`` and ``out/report.md``."""
    out = Path(out)
    io.write_json(out / "results.json", doc)
    with io.atomic_path(out / "report.md") as tmp:
        tmp.write_text(markdown(doc))


def load(path: str | Path) -> dict[str, Any]:
    """Read a results.json, checking its format."""
    doc = io.read_json(path, "results")
    if doc.get("format") != RESULTS_FORMAT:
        raise ValueError(f"results: {path} has format {doc.get('format')!r}, expected {RESULTS_FORMAT!r}")
    return doc
