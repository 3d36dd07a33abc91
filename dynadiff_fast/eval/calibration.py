"""The calibration part of an evaluation's report: the ensemble methods (K >= 2 predictors per environment,
scored by ``eval.probabilistic``) side by side.

markdown(doc)          a table (K, CRPS, spread/skill, 90% coverage per method and domain) and one sentence per
                       method and domain saying whether its spread is calibrated: spread/skill inside
                       ``CALIBRATED`` reads "calibrated", below "over-confident" (the spread too small for the
                       error), above "under-confident"; the 90% coverage beside it.
write_figures(...)     figures/spread_vs_error.png  per domain, over the lead time, each method's spread (dashed)
                                                    and the RMSE of its ensemble mean (solid), same colour
                       figures/ensemble_band_<domain>.png  per method, one rollout (the first environment's first
                                                    test trajectory, channel 0 at the grid centre): every member,
                                                    the members' range as a band, and the truth
"""

from __future__ import annotations

from pathlib import Path

import torch

from dynadiff_fast.eval.protocol import DOMAINS

CALIBRATED = (0.8, 1.25)  # spread/skill read as calibrated inside this range


def ensemble_keys(doc: dict) -> list[str]:
    """Result keys with ensemble scores (``crps``) in some domain, in results order."""
    return [k for k, per in doc["methods"].items() if any((per.get(d) or {}).get("crps") for d in DOMAINS)]


def _cell(entry: dict | None, name: str, digits: int) -> str:
    stat = (entry or {}).get(name)
    return "n/a" if not stat else f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}"


def table(doc: dict) -> list[str]:
    head = ["method", "K"] + [f"{d} {m}" for m in ("CRPS", "spread/skill", "coverage 90%") for d in DOMAINS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key in ensemble_keys(doc):
        per = doc["methods"][key]
        k = next(per[d]["ensemble_size"] for d in DOMAINS if (per.get(d) or {}).get("crps"))
        cells = [
            _cell(per.get(d), m, 3 if m != "crps" else 4)
            for m in ("crps", "spread_skill", "coverage90")
            for d in DOMAINS
        ]
        lines.append(f"| {key} | {k} | " + " | ".join(cells) + " |")
    return lines


def reading(ratio: float) -> str:
    lo, hi = CALIBRATED
    if ratio < lo:
        return "over-confident (spread too small for its error)"
    if ratio > hi:
        return "under-confident (spread too large for its error)"
    return "calibrated"


def verdict(doc: dict) -> list[str]:
    lines = []
    for key in ensemble_keys(doc):
        for d in DOMAINS:
            e = doc["methods"][key].get(d) or {}
            if not e.get("spread_skill"):
                continue
            r, c90, c50 = e["spread_skill"]["mean"], e["coverage90"]["mean"], e["coverage50"]["mean"]
            lines.append(
                f"- {key}, {d}: spread/skill {r:.2f}, {reading(r)}; the central 90% / 50% intervals hold the truth "
                f"{100 * c90:.0f}% / {100 * c50:.0f}% of the time (nominal 90% / 50%); CRPS {e['crps']['mean']:.4f}."
            )
    return lines


def markdown(doc: dict) -> list[str]:
    """The report section (lines), empty when no method has ensemble scores."""
    if not ensemble_keys(doc):
        return []
    lo, hi = CALIBRATED
    return [
        "## Uncertainty: the ensembles",
        "",
        "Methods with K >= 2 predictors per environment, scored on the same rollouts as the RMSE: fair CRPS "
        "(lower is better), spread/skill (sqrt((K+1)/K) x ensemble spread / RMSE of the ensemble mean; 1 = "
        f"calibrated, read as calibrated within [{lo}, {hi}]) and the PIT coverage of the central 90% interval; "
        "mean ± std over environments.",
        "",
        *table(doc),
        "",
        *verdict(doc),
    ]


def spread_vs_error(path: Path, doc: dict) -> Path:
    from dynadiff_fast.eval.figures import _plt, _save

    plt = _plt()
    keys = ensemble_keys(doc)
    cmap = plt.get_cmap("tab10")  # distinct hues: each method's spread and error share one
    colors = {k: cmap(i % 10) for i, k in enumerate(keys)}
    fig, axes = plt.subplots(1, len(DOMAINS), figsize=(5.5 * len(DOMAINS), 4), squeeze=False)
    for ax, d in zip(axes[0], DOMAINS, strict=True):
        for key in keys:
            e = doc["methods"][key].get(d) or {}
            if not e.get("curve_spread"):
                continue
            steps = range(1, len(e["curve_skill"]) + 1)
            ax.plot(steps, e["curve_skill"], "-", color=colors[key], label=f"{key} error")
            ax.plot(steps, e["curve_spread"], "--", color=colors[key], label=f"{key} spread")
        ax.set_title(f"{d}: spread (dashed) vs error of the ensemble mean (solid)", fontsize=9)
        ax.set_xlabel("rollout step")
        ax.set_ylabel("standardised units")
    axes[0, -1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return _save(fig, path)


def ensemble_band(path: Path, truth: torch.Tensor, members: dict[str, torch.Tensor], label: str) -> Path:
    """truth ``[T+1]`` and ``{method: [K, T+1]}`` at one point of one rollout -> one panel per method."""
    from dynadiff_fast.eval.figures import _plt, _save

    plt = _plt()
    fig, axes = plt.subplots(1, len(members), figsize=(4.2 * len(members), 3.2), squeeze=False, sharey=True)
    steps = range(truth.shape[0])
    for ax, (key, m) in zip(axes[0], members.items(), strict=True):
        ax.fill_between(steps, m.min(0).values, m.max(0).values, color="tab:blue", alpha=0.25, label="members' range")
        for row in m:
            ax.plot(steps, row, color="tab:blue", lw=0.6, alpha=0.6)
        ax.plot(steps, m.mean(0), color="tab:blue", lw=1.5, label="ensemble mean")
        ax.plot(steps, truth, color="black", lw=2, label="truth")
        ax.set_title(f"{key} (K = {m.shape[0]})", fontsize=9)
        ax.set_xlabel("rollout step")
    axes[0, 0].set_ylabel(label)
    axes[0, 0].legend(fontsize=7)
    return _save(fig, path)


def write_figures(out: Path, doc: dict, kept: dict) -> list[Path]:
    """The two calibration figures (module docstring) when some method has ensemble scores."""
    if not ensemble_keys(doc):
        return []
    paths = [spread_vs_error(out / "spread_vs_error.png", doc)]
    for d in DOMAINS:
        k = kept.get(d, {})
        if k.get("ensemble_probe"):
            label = f"{(k.get('labels') or ['env 0'])[0]}: channel 0 (grid centre)"
            paths.append(ensemble_band(out / f"ensemble_band_{d}.png", k["truth_probe"], k["ensemble_probe"], label))
    return paths
