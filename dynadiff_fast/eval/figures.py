"""PNG figures of an evaluation (matplotlib, Agg backend).

rollout_<domain>.png    truth / prediction / |error| panels at a few steps, for a few environments
                        (first test trajectory, channel 0, DynaDiff's prediction; another method if absent);
                        for ODE states [C] instead: each channel against the step, and the (x, y) phase
                        plane, truth against DynaDiff, One-per-Env and the base model
error_vs_step_<domain>.png   RMSE per rollout step, one line per method
spread_vs_error.png, ensemble_band_<domain>.png   the ensemble methods' calibration (``eval.calibration``)
env_errors.png          per-environment error: RMSE vs the parameter for 1-D environments; for 2-D environment
                        grids the paper's Figure 4 layout (SSIM maps of DynaDiff, One-per-Env and their
                        difference over the parameter plane; seen environments ringed)
"""

from __future__ import annotations

from pathlib import Path

import torch

from dynadiff_fast import io
from dynadiff_fast.eval.protocol import DOMAINS

PREFERRED = ("dynadiff_prefix", "dynadiff_none", "one_per_env", "base")


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    with io.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    _plt().close(fig)
    return path


def panel_steps(steps: int, n: int = 4) -> list[int]:
    """``n`` evenly spaced steps in 1..steps (always including the last)."""
    n = min(n, steps)
    return sorted({max(1, round(steps * (i + 1) / n)) for i in range(n)})


def rollout_panels(
    path: Path, truth: torch.Tensor, pred: torch.Tensor, method: str, channel: str, labels: list[str] | None = None
) -> Path:
    """truth/pred ``[n_env, T+1, C, H, W]``: rows (truth, prediction, |error|) per environment, columns = steps;
    ``labels``: one row label per environment (default ``env i``)."""
    plt = _plt()
    n_env, t1 = truth.shape[:2]
    steps = panel_steps(t1 - 1)
    fig, axes = plt.subplots(3 * n_env, len(steps), figsize=(2.0 * len(steps), 2.0 * 3 * n_env), squeeze=False)
    for e in range(n_env):
        vmin, vmax = float(truth[e, :, 0].min()), float(truth[e, :, 0].max())
        err = (pred[e, :, 0] - truth[e, :, 0]).abs()
        for j, t in enumerate(steps):
            for r, (img, label, kw) in enumerate(
                (
                    (truth[e, t, 0], "truth", {"vmin": vmin, "vmax": vmax, "cmap": "RdBu_r"}),
                    (pred[e, t, 0], method, {"vmin": vmin, "vmax": vmax, "cmap": "RdBu_r"}),
                    (err[t], "|error|", {"vmin": 0.0, "vmax": float(err.max()) or 1.0, "cmap": "magma"}),
                )
            ):
                ax = axes[3 * e + r, j]
                ax.imshow(img.numpy(), origin="lower", **kw)
                ax.set_xticks([])
                ax.set_yticks([])
                if j == 0:
                    ax.set_ylabel(f"{labels[e] if labels else f'env {e}'}\n{label}", fontsize=7)
                if e == 0 and r == 0:
                    ax.set_title(f"step {t}", fontsize=9)
    fig.suptitle(f"{method}: channel {channel}, first test trajectory", fontsize=10, y=1.0)
    fig.tight_layout()
    return _save(fig, path)


def ode_rollouts(
    path: Path, truth: torch.Tensor, preds: dict[str, torch.Tensor], channels, labels: list[str] | None = None
) -> Path:
    """ODE trajectories: truth and ``preds`` (``{method: [n_env, T+1, C]}``) per environment, one row each:
    every channel against the rollout step, then the phase plane of the first two channels."""
    plt = _plt()
    n_env, _, n_ch = truth.shape
    phase = n_ch >= 2
    fig, axes = plt.subplots(n_env, n_ch + phase, figsize=(3.6 * (n_ch + phase), 2.8 * n_env), squeeze=False)
    colors = _colors(preds)
    for e in range(n_env):
        row = axes[e]
        for c in range(n_ch):
            row[c].plot(truth[e, :, c], color="black", lw=2, label="truth")
            for key, p in preds.items():
                row[c].plot(p[e, :, c], "--", color=colors[key], label=key)
            row[c].set_title(f"{labels[e] if labels else f'env {e}'}: {channels[c]}", fontsize=8)
            row[c].set_xlabel("step")
        if phase:
            row[-1].plot(truth[e, :, 0], truth[e, :, 1], color="black", lw=2, label="truth")
            for key, p in preds.items():
                row[-1].plot(p[e, :, 0], p[e, :, 1], "--", color=colors[key], label=key)
            row[-1].set_xlabel(channels[0])
            row[-1].set_ylabel(channels[1])
            row[-1].set_title("phase plane", fontsize=8)
    axes[0, -1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    return _save(fig, path)


def _colors(keys) -> dict:
    """One distinct colour per method (tab20: the default cycle repeats after 10)."""
    cmap = _plt().get_cmap("tab20")
    return {k: cmap(i % 20) for i, k in enumerate(keys)}


def error_vs_step(path: Path, doc: dict, domain: str) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    colors = _colors(doc["methods"])
    for key, per in doc["methods"].items():
        e = per.get(domain)
        if e and "error" not in e:
            curve = e["curve_rmse"]
            style = "-" if key.startswith("dynadiff") else "--"
            lw = 2.5 if key == "dynadiff_prefix" else 1.2
            ax.plot(range(1, len(curve) + 1), curve, style, color=colors[key], label=key, lw=lw)
    ax.set_xlabel("rollout step")
    ax.set_ylabel("RMSE (standardised)")
    ax.set_yscale("log")
    ax.set_title(f"{doc['system']}: {domain}")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return _save(fig, path)


def _per_env(doc: dict, key: str, metric: str = "rmse") -> tuple[list, list, list]:
    """(params, metric, split) over both domains for ``key``."""
    params, err, split = [], [], []
    for d in DOMAINS:
        e = doc["methods"].get(key, {}).get(d)
        if e and "error" not in e and e.get(metric) is not None:
            for row in e["per_env"]:
                params.append(row["params"])
                err.append(row[metric])
                split.append(row["split"])
    return params, err, split


def env_errors(path: Path, doc: dict) -> Path | None:
    plt = _plt()
    names = doc["param_names"]
    if len(names) == 1:
        fig, ax = plt.subplots(figsize=(8, 4.5))
        colors = _colors(doc["methods"])
        for key in doc["methods"]:
            p, r, s = _per_env(doc, key)
            if p:
                order = sorted(range(len(p)), key=lambda i: p[i][0])
                xs, ys = [p[i][0] for i in order], [r[i] for i in order]
                ax.plot(xs, ys, "o-" if key.startswith("dyn") else ".--", color=colors[key], label=key)
        p, r, s = _per_env(doc, PREFERRED[0])
        seen = [p[i][0] for i in range(len(p)) if s[i] == "seen"]
        for x in seen:
            ax.axvline(x, color="green", alpha=0.15)
        ax.set_xlabel(names[0])
        ax.set_ylabel("RMSE")
        ax.set_yscale("log")
        ax.set_title("per-environment RMSE (green: seen environments)")
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
        return _save(fig, path)
    # 2-D parameter grids: the paper's Figure 4 (SSIM of DynaDiff, of One-per-Env, and their difference)
    keys = [k for k in ("dynadiff_prefix", "one_per_env") if _per_env(doc, k)[0]]
    if not keys:  # neither has results (failed or not run): no map to draw
        return None
    metric = "ssim" if all(_per_env(doc, k, "ssim")[0] for k in keys) else "rmse"
    fig, axes = plt.subplots(1, len(keys) + (len(keys) == 2), figsize=(5 * (len(keys) + 1), 4), squeeze=False)
    maps = {k: _per_env(doc, k, metric) for k in keys}
    for ax, key in zip(axes[0], keys, strict=False):
        p, r, s = maps[key]
        sc = ax.scatter([q[0] for q in p], [q[1] for q in p], c=r, s=120, marker="s", cmap="viridis")
        _ring_seen(ax, p, s)
        ax.set_title(f"{key} {metric.upper()}")
        fig.colorbar(sc, ax=ax)
    if len(keys) == 2:
        (p, r1, s), (_, r2, _) = maps[keys[0]], maps[keys[1]]
        diff = [a - b for a, b in zip(r1, r2, strict=True)]
        lim = max(abs(x) for x in diff) or 1.0
        ax = axes[0, 2]
        cmap = "RdBu" if metric == "ssim" else "RdBu_r"  # blue = DynaDiff better either way
        sc = ax.scatter([q[0] for q in p], [q[1] for q in p], c=diff, s=120, marker="s", cmap=cmap, vmin=-lim, vmax=lim)
        _ring_seen(ax, p, s)
        ax.set_title(f"DynaDiff - One-per-Env {metric.upper()} (blue: DynaDiff better)")
        fig.colorbar(sc, ax=ax)
    for ax in axes[0]:
        ax.set_xlabel(names[0])
        ax.set_ylabel(names[1])
    return _save(fig, path)


def _ring_seen(ax, params, split) -> None:
    seen = [q for q, s in zip(params, split, strict=True) if s == "seen"]
    if seen:
        ax.scatter([q[0] for q in seen], [q[1] for q in seen], s=260, facecolors="none", edgecolors="lime", lw=1.5)


def write_all(out: str | Path, doc: dict, kept: dict, channel_names) -> list[Path]:
    """Every figure of an evaluation under ``out``; returns the written paths."""
    out = Path(out)
    paths = []
    for d in DOMAINS:
        if any(e.get(d) and "error" not in e[d] for e in doc["methods"].values()):
            paths.append(error_vs_step(out / f"error_vs_step_{d}.png", doc, d))
        k = kept.get(d, {})
        method = next((m for m in PREFERRED if k.get(m) is not None), None)
        if method is not None and k["truth"].dim() == 5:  # 2-D fields [n, T+1, C, H, W]
            paths.append(
                rollout_panels(
                    out / f"rollout_{d}.png", k["truth"], k[method], method, channel_names[0], k.get("labels")
                )
            )
        elif method is not None and k["truth"].dim() == 3:  # ODE states [n, T+1, C]
            preds = {m: k[m] for m in ("dynadiff_prefix", "one_per_env", "base") if k.get(m) is not None}
            paths.append(ode_rollouts(out / f"rollout_{d}.png", k["truth"], preds, channel_names, k.get("labels")))
    if len(doc["param_names"]) in (1, 2) and (path := env_errors(out / "env_errors.png", doc)) is not None:
        paths.append(path)
    from dynadiff_fast.eval import calibration  # spread vs error, ensemble bands (methods with K >= 2)

    return paths + calibration.write_figures(out, doc, kept)
