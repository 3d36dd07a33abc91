"""``dynadiff benchmark``: the whole pipeline over several seeds, then statistics over seeds and environments.

    dynadiff benchmark                                     # lambda_omega, bench preset, seeds 0 1 2, CPU
    dynadiff benchmark --system navier_stokes --seeds "[0, 1, 2, 3, 4]"

Per seed ``s``, ``OUT/seed_s/`` holds one ``dynadiff demo`` run (``pipeline.demo``: simulate, zoo, VAE, DiT,
generate, evaluate; every finished stage is reused on a re-run) in which ``s`` seeds the initial conditions, the
zoo, the VAE, the DiT and the sampling, while the seen/unseen split is the same for every seed (``split_seed``), so
each environment pairs across seeds. Two more stages per seed:

    diagnostics   OUT/seed_s/diagnostics.json: where DynaDiff loses the environment signal, stage by stage
                  (VAE: decoded zoo experts' rollout RMSE vs the originals'; prompter: R^2 of the environment
                  parameters read from the prompt; DiT: generated latents' distance to the true environment's
                  latents vs the between-environment distance) and the memorisation audit (``eval.diagnostics``)
    obs_budget    OUT/seed_s/obs_budget/L_<L>/results.json: DynaDiff and the prefix-based baselines observing
                  L frames, for L in ``obs_budget``

Then the aggregate (``eval.aggregate``): ``OUT/results.json`` (mean and 95% CI over seeds per method, domain and
sub-split; per method the paired per-environment ratio to DynaDiff with its bootstrap CI and win rate),
``OUT/report.md`` (verdict against the targets, stage times, diagnostics) and ``OUT/figures/{summary,
obs_budget}.png``. OUT defaults to ``runs/benchmark/<system>_<preset>``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dynadiff_fast import config as config_mod
from dynadiff_fast import io
from dynadiff_fast.generative.dynadiff import N_SAMPLES
from dynadiff_fast.stages.common import Command
from dynadiff_fast.stages.demo import DEFAULT_METHODS, DemoConfig, run_demo
from dynadiff_fast.stages.runner import Stage, run_stages

log = logging.getLogger("dynadiff.benchmark")

# The methods that select or search on the observations (they all rank by the one prefix score): the
# observation-budget curve's result keys.
BUDGET_KEYS = ("dynadiff_prefix", "nn_prefix", "soup_prefix", "ccm")


@dataclass(frozen=True)
class BenchmarkConfig:
    system: str = field(default="lambda_omega", metadata={"help": "system to benchmark"})
    preset: str = field(default="bench", metadata={"help": "preset of every stage (bench: the informative one)"})
    seeds: tuple[int, ...] = field(default=(0, 1, 2), metadata={"help": "seeds, one full pipeline each"})
    split_seed: int = field(default=0, metadata={"help": "seed of the seen/unseen split, shared by all seeds"})
    out: str | None = field(default=None, metadata={"help": "folder (default runs/benchmark/SYSTEM_PRESET)"})
    device: str | None = field(default=None, metadata={"help": "cpu | cuda (default: cuda when available)"})
    n_samples: int = field(default=N_SAMPLES, metadata={"help": "DynaDiff candidates K per environment"})
    obs_len: int = field(default=10, metadata={"help": "observed frames L of the main comparison"})
    obs_budget: tuple[int, ...] = field(default=(2, 5, 10, 20), metadata={"help": "L values of the budget curve"})
    methods: tuple[str, ...] | None = field(
        default=DEFAULT_METHODS, metadata={"help": "evaluated methods (None: all, prefix fine-tuning too)"}
    )
    diagnostics: bool = field(default=True, metadata={"help": "stage diagnostics and memorisation audit"})
    force: tuple[str, ...] = field(default=(), metadata={"help": "stages to redo in every seed (see demo), all"})
    progress: bool = field(
        default=True, metadata={"help": "progress: a tqdm bar on a terminal, else a log line every 30 s (rank 0)"}
    )

    def __post_init__(self) -> None:
        check(self)


def out_dir(cfg: BenchmarkConfig) -> Path:
    return Path(cfg.out) if cfg.out else Path("runs/benchmark") / f"{cfg.system}_{cfg.preset}"


def check(cfg: BenchmarkConfig) -> None:
    if not cfg.seeds or len(set(cfg.seeds)) != len(cfg.seeds):
        raise ValueError(f"seeds: expected distinct seeds, at least one, got {list(cfg.seeds)}")
    if any(not isinstance(s, int) or s < 0 for s in cfg.seeds):
        raise ValueError(f"seeds: expected integers >= 0, got {list(cfg.seeds)}")
    if any(not isinstance(n, int) or n < 2 for n in (cfg.obs_len, *cfg.obs_budget)):
        raise ValueError(f"obs_len / obs_budget: expected integers >= 2, got {cfg.obs_len} / {list(cfg.obs_budget)}")
    if cfg.n_samples < 1:
        raise ValueError(f"n_samples: expected >= 1, got {cfg.n_samples}")
    from dynadiff_fast.data.presets import get_preset

    get_preset(cfg.system, cfg.preset)  # a system without this preset fails here, before any stage runs


def demo_config(cfg: BenchmarkConfig, seed: int) -> DemoConfig:
    return DemoConfig(
        system=cfg.system,
        preset=cfg.preset,
        out=str(out_dir(cfg) / f"seed_{seed}"),
        seed=seed,
        split_seed=cfg.split_seed,
        device=cfg.device,
        n_samples=cfg.n_samples,
        obs_len=cfg.obs_len,
        prompt_len=max(cfg.obs_len, *cfg.obs_budget),
        methods=cfg.methods,
        force=tuple(s for s in cfg.force if s not in ("diagnostics", "obs_budget")),
        progress=cfg.progress,
    )


# ---- per-seed extra stages -------------------------------------------------------------------------------------
def _diagnostics(root: Path, demo: DemoConfig) -> dict[str, Any]:
    """Stage-by-stage signal measurements and the memorisation audit of one seed's run."""
    import torch

    from dynadiff_fast.data import EnvDataset
    from dynadiff_fast.eval import diagnostics
    from dynadiff_fast.eval.protocol import ProtocolConfig, make_task
    from dynadiff_fast.experts.zoo import Zoo
    from dynadiff_fast.generative.dynadiff import DynaDiff

    dd = DynaDiff.load(root / "dynadiff", device=demo.device or "cpu")
    zoo = Zoo.open(root / "zoo")
    vae_quality = io.read_json(root / "dynadiff" / "vae" / "quality.json", "VAE quality")["summary"]
    with EnvDataset.open(root / "data.h5") as ds:
        protocol = ProtocolConfig(obs_len=demo.obs_len)
        seen, unseen = make_task(ds, "in_domain", protocol), make_task(ds, "out_domain", protocol)
    obs, params = torch.cat([seen.obs, unseen.obs]), torch.cat([seen.params, unseen.params])
    is_seen = torch.tensor([True] * seen.n_env + [False] * unseen.n_env)
    return {
        "vae": vae_quality,
        "prompter": {
            "seen": diagnostics.prompter_r2(dd, seen.obs, seen.params),
            "unseen": diagnostics.prompter_r2(dd, unseen.obs, unseen.params),
        },  # fmt: skip
        "dit": diagnostics.latent_diagnostics(dd, zoo, obs, params, is_seen, n_samples=demo.n_samples, seed=demo.seed),
        "memorisation": diagnostics.memorisation_audit(dd, zoo, unseen.obs, unseen.x0, demo.n_samples, demo.seed),
        "unseen_envs": unseen.envs.tolist(),
    }


def _budget_eval(root: Path, demo: DemoConfig, length: int):
    from dynadiff_fast.eval.protocol import ProtocolConfig
    from dynadiff_fast.stages.evaluate import EvaluateConfig

    return EvaluateConfig(
        run=str(root / "dynadiff"),
        data=str(root / "data.h5"),
        zoo=str(root / "zoo"),
        out=str(root / "obs_budget" / f"L_{length}"),
        methods=BUDGET_KEYS,
        preset=demo.preset,
        n_samples=demo.n_samples,
        seed=demo.seed,
        device=demo.device or "auto",
        protocol=ProtocolConfig(obs_len=length),
    )


def _evaluate(ev) -> None:
    from dynadiff_fast.stages.evaluate import run_evaluation

    run_evaluation(ev)


def extra_stages(cfg: BenchmarkConfig, demo: DemoConfig) -> list[Stage]:
    root = Path(demo.out)
    stages = []
    if cfg.diagnostics:
        path = root / "diagnostics.json"
        stages.append(
            Stage(
                "diagnostics",
                {"n_samples": demo.n_samples, "obs_len": demo.obs_len, "seed": demo.seed},
                lambda: io.write_json(path, _diagnostics(root, demo)),
                path.exists,
            )
        )
    for length in cfg.obs_budget:
        if length == cfg.obs_len:  # the main evaluation is this point of the curve
            continue
        ev = _budget_eval(root, demo, length)
        results = Path(ev.out) / "results.json"
        stages.append(
            Stage(f"obs_budget_{length}", config_mod.to_dict(ev), lambda ev=ev: _evaluate(ev), results.exists)
        )
    return stages


# ---- the whole benchmark -----------------------------------------------------------------------------------
def run_benchmark(cfg: BenchmarkConfig) -> dict[str, Any]:
    """Run (or finish) every seed, then write the aggregate; returns the aggregate document."""
    from dynadiff_fast.eval import aggregate

    check(cfg)
    out = out_dir(cfg)
    out.mkdir(parents=True, exist_ok=True)
    config_mod.save_resolved(cfg, out / "config.yaml", seed=list(cfg.seeds))
    stage_times, docs, diags = {}, [], {}
    for seed in cfg.seeds:
        demo = demo_config(cfg, seed)
        log.info("seed %d: %s", seed, demo.out)
        records = run_demo(demo)
        forced = tuple(s for s in cfg.force if s in ("all", "diagnostics") or s.startswith("obs_budget"))
        records += run_stages(Path(demo.out), extra_stages(cfg, demo), forced)
        stage_times[seed] = {r["stage"]: r["seconds"] for r in records}
        docs.append(io.read_json(Path(demo.out) / "eval" / "results.json", f"seed {seed} results"))
        if cfg.diagnostics:
            diags[seed] = io.read_json(Path(demo.out) / "diagnostics.json", f"seed {seed} diagnostics")
    agg = aggregate.aggregate(docs, list(cfg.seeds), system=cfg.system, preset=cfg.preset)
    agg["stage_seconds"] = stage_times
    agg["obs_budget"] = budget_table(cfg)
    agg["diagnostics"] = summarize_diagnostics(diags)
    agg["stage_verdict"] = stage_verdict(agg["diagnostics"])
    agg["config"] = config_mod.to_dict(cfg)
    agg["versions"] = config_mod.versions()
    io.write_json(out / "results.json", agg)
    figures = out / "figures"
    aggregate.summary_figure(agg, figures / "summary.png")
    budget_figure(agg["obs_budget"], figures / "obs_budget.png")
    sections = {"Observation budget": budget_markdown(agg["obs_budget"])}
    if diags:
        sections["Where the signal goes, stage by stage"] = diagnostics_markdown(agg["diagnostics"])
    report = aggregate.report_markdown(agg, stage_times, sections)
    with io.atomic_path(out / "report.md") as tmp:
        tmp.write_text(report)
    return agg


# ---- observation budget ----------------------------------------------------------------------------------------
def budget_table(cfg: BenchmarkConfig) -> dict[str, Any]:
    """``{domain: {method: {L: {"mean", "ci95"}}}}`` over seeds, from every seed's obs_budget runs."""
    from dynadiff_fast.eval import aggregate

    table: dict[str, Any] = {}
    for length in cfg.obs_budget:
        where = "eval" if length == cfg.obs_len else f"obs_budget/L_{length}"
        docs = [io.read_json(out_dir(cfg) / f"seed_{s}" / where / "results.json", "budget results") for s in cfg.seeds]
        agg = aggregate.aggregate(docs, list(cfg.seeds), system=cfg.system, preset=cfg.preset)
        for key in BUDGET_KEYS:
            for domain, entry in agg["methods"].get(key, {}).items():
                rmse = entry["rmse"]
                table.setdefault(domain, {}).setdefault(key, {})[str(length)] = {
                    "mean": rmse["mean"],
                    "ci95": rmse["ci95"],
                }
    return table


def budget_markdown(table: dict[str, Any]) -> str:
    lines = []
    for domain, per in table.items():
        lengths = sorted({int(n) for m in per.values() for n in m}, key=int)
        lines += [f"**{domain}** (RMSE, mean [95% CI] over seeds)", ""]
        lines += ["| method | " + " | ".join(f"L = {n}" for n in lengths) + " |", "|---" * (len(lengths) + 1) + "|"]
        for key, row in per.items():
            cells = [
                f"{row[str(n)]['mean']:.4f} [{row[str(n)]['ci95'][0]:.4f}, {row[str(n)]['ci95'][1]:.4f}]"
                if row.get(str(n)) and row[str(n)]["mean"] is not None
                else "n/a"
                for n in lengths
            ]
            lines.append(f"| {key} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def budget_figure(table: dict[str, Any], path: Path) -> Path:
    """RMSE vs observed frames L, one panel per domain, one line (with its 95% CI band) per method."""
    from dynadiff_fast.eval.figures import _plt, _save

    plt = _plt()
    domains = list(table)
    fig, axes = plt.subplots(1, len(domains), figsize=(4.2 * len(domains), 3.4), squeeze=False)
    for ax, domain in zip(axes[0], domains, strict=True):
        lengths = sorted({int(n) for row in table[domain].values() for n in row})
        for key, row in table[domain].items():
            pts = sorted((int(n), v) for n, v in row.items() if v["mean"] is not None)
            xs = [n for n, _ in pts]
            ax.plot(xs, [v["mean"] for _, v in pts], marker="o", label=key)
            ax.fill_between(xs, [v["ci95"][0] for _, v in pts], [v["ci95"][1] for _, v in pts], alpha=0.2)
        ax.set_xscale("log")
        ax.set_xticks(lengths, [str(n) for n in lengths])
        ax.set_title(domain)
        ax.set_xlabel("observed frames L")
        ax.set_ylabel("rollout RMSE")
    axes[0][0].legend(fontsize=7)
    path.parent.mkdir(parents=True, exist_ok=True)
    return _save(fig, path)


# ---- diagnostics over seeds ------------------------------------------------------------------------------------
def _mean(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None


def summarize_diagnostics(diags: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """Seed means of each stage's headline number (per-seed values kept)."""
    if not diags:
        return {}
    per_seed = {
        seed: {
            "vae_decoded_over_original": d["vae"]["rmse_decoded_mean"] / d["vae"]["rmse_original_mean"],
            "vae_within_5pct": d["vae"]["fraction_within_5pct"],
            "prompter_r2_seen": _mean(d["prompter"]["seen"]["r2"]),
            "prompter_r2_unseen": _mean(d["prompter"]["unseen"]["r2"]),
            "dit_ratio_seen": d["dit"]["summary"]["seen"]["ratio_mean"],
            "dit_ratio_unseen": d["dit"]["summary"]["unseen"]["ratio_mean"],
            "dit_snap_rate_unseen": d["dit"]["summary"]["unseen"]["snap_rate"],
            "memo_weight_nn": d["memorisation"]["summary"]["weight_nn_mean"],
            "memo_function_nn": d["memorisation"]["summary"]["function_nn_mean"],
            "zoo_weight_within": d["memorisation"]["zoo"]["weight_within"],
            "zoo_weight_between": d["memorisation"]["zoo"]["weight_between"],
            "zoo_function_within": d["memorisation"]["zoo"]["function_within"],
            "zoo_function_between": d["memorisation"]["zoo"]["function_between"],
        }
        for seed, d in diags.items()
    }
    keys = next(iter(per_seed.values()))
    return {"mean": {k: _mean([p[k] for p in per_seed.values()]) for k in keys}, "per_seed": per_seed}


_DIAG_ROWS = (
    ("VAE", "vae_decoded_over_original", "decoded / original zoo-expert rollout RMSE (1 = lossless)"),
    ("VAE", "vae_within_5pct", "fraction of decoded experts within 5% of the original"),
    ("prompter", "prompter_r2_seen", "R^2 of the parameters read from the prompt, seen environments"),
    ("prompter", "prompter_r2_unseen", "R^2 of the parameters read from the prompt, unseen environments"),
    ("DiT", "dit_ratio_seen", "generated-to-true-latent distance / between-environment distance, seen"),
    ("DiT", "dit_ratio_unseen", "the same for unseen environments (true latent interpolated in the parameter)"),
    ("DiT", "dit_snap_rate_unseen", "unseen: generated latents nearest the zoo env nearest in parameter"),
    ("audit", "memo_weight_nn", "generated expert to its nearest zoo expert, weight space (normalised RMS)"),
    ("audit", "zoo_weight_within", "zoo: expert to nearest expert of its own environment, weight space"),
    ("audit", "zoo_weight_between", "zoo: expert to nearest expert of another environment, weight space"),
    ("audit", "memo_function_nn", "generated expert to its nearest zoo expert, one-step predictions (RMSE)"),
    ("audit", "zoo_function_within", "zoo: within-environment nearest distance, one-step predictions"),
    ("audit", "zoo_function_between", "zoo: between-environment nearest distance, one-step predictions"),
)


# Per stage: the measure, the bar it must clear to pass the environment signal on, and which way is better.
STAGE_BARS = (
    ("VAE", "vae_decoded_over_original", 1.05, "below"),
    ("prompter", "prompter_r2_unseen", 0.8, "above"),
    ("DiT", "dit_snap_rate_unseen", 0.5, "below"),
)


def stage_verdict(summary: dict[str, Any]) -> list[str]:
    """One sentence per stage (seed means against ``STAGE_BARS``), then the first stage that fails its bar: the
    one to work on. The DiT bar: at most half of the unseen environments' generated latents may land nearest the
    seen environment nearest in parameter (more means generation retrieves a seen environment, not a new one)."""
    if not summary:
        return []
    lines, first = [], None
    for stage, key, bar, side in STAGE_BARS:
        value = summary["mean"][key]
        ok = value is not None and (value <= bar if side == "below" else value >= bar)
        shown = "n/a" if value is None else f"{value:.3f}"
        lines.append(f"{stage}: {key} = {shown} ({'passes' if ok else 'fails'} the bar: {side} {bar})")
        if not ok and first is None:
            first = stage
    lines.append(f"first stage to lose the signal: {first}" if first else "every stage passes its bar")
    return lines


def diagnostics_markdown(summary: dict[str, Any]) -> str:
    if not summary:
        return "not run"
    seeds = list(summary["per_seed"])
    head = "| stage | measure | mean | " + " | ".join(f"seed {s}" for s in seeds) + " |"
    lines = [head, "|---" * (3 + len(seeds)) + "|"]
    for stage, key, text in _DIAG_ROWS:
        vals = [summary["per_seed"][s][key] for s in seeds]
        fmt = [f"{v:.3f}" if v is not None else "n/a" for v in vals]
        mean = summary["mean"][key]
        lines.append(f"| {stage} | {text} | {'n/a' if mean is None else f'{mean:.3f}'} | " + " | ".join(fmt) + " |")
    return "\n".join([*lines, "", *(f"- {s}" for s in stage_verdict(summary))])


def _run(cfg: BenchmarkConfig) -> int:
    agg = run_benchmark(cfg)
    print("\n".join([*agg["verdict"], *agg["stage_verdict"]]))
    print(f"\nreport: {out_dir(cfg) / 'report.md'}")
    return 0


COMMAND = Command(config=BenchmarkConfig, run=_run)
