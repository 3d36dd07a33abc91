"""``dynadiff evaluate``: DynaDiff and every baseline on one dataset, one zoo, one protocol.

    dynadiff evaluate --run RUN --data FILE.h5 --out DIR [--zoo ZOO] [--methods "[base, ccm]"]

Writes ``DIR/results.json`` (``report.RESULTS_FORMAT``), ``DIR/report.md``, ``DIR/figures/*.png`` and
``DIR/config.yaml``. In Python: ``evaluate(ds, zoo, run_dir, ...)`` returns the results dict and the
predictions kept for figures.

Per domain, each method adapts on the task's observation sequences (``eval.protocol.Task``), then
rolls out every test trajectory; scoring is done in chunks of environments so a paper-size evaluation
never holds every prediction at once.
"""

from __future__ import annotations

import logging
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from dynadiff_fast import config as config_mod
from dynadiff_fast import io
from dynadiff_fast._backend import resolve_device
from dynadiff_fast.eval.protocol import DOMAINS, ProtocolConfig, cat_scores, env_chunks, make_task, score, summarize
from dynadiff_fast.generative.dynadiff import N_SAMPLES
from dynadiff_fast.profiling import nvtx_range
from dynadiff_fast.stages.common import Command

log = logging.getLogger("dynadiff.evaluate")


@dataclass(frozen=True)
class EvaluateConfig:
    run: str | None = field(default=None, metadata={"help": "DynaDiff run (`dynadiff train all` folder)"})
    data: str = field(default="", metadata={"help": "dataset .h5 (`dynadiff simulate`)"})
    out: str = field(default="", metadata={"help": "output folder"})
    zoo: str | None = field(default=None, metadata={"help": "zoo folder (default: RUN/zoo or RUN/../zoo)"})
    methods: tuple[str, ...] | None = field(
        default=None, metadata={"help": "methods or result keys to run, e.g. [ccm, dynadiff_prefix] (None: all)"}
    )
    preset: str = field(default="tiny", metadata={"help": "training budgets of the baselines: tiny|small|paper"})
    budget: dict[str, Any] = field(
        default_factory=dict, metadata={"help": "baseline budget overrides, e.g. {search_points: 7}"}
    )
    n_samples: int = field(default=N_SAMPLES, metadata={"help": "DynaDiff candidates K per environment"})
    seed: int = field(default=0, metadata={"help": "seed of every random choice"})
    device: str = field(default="auto", metadata={"help": "cpu | cuda | auto"})
    env_chunk: int | None = field(default=None, metadata={"help": "environments scored at once (None: all)"})
    figure_envs: int = field(default=3, metadata={"help": "environments shown in the rollout figures"})
    strict: bool = field(default=False, metadata={"help": "raise on a failing method (else record it)"})
    protocol: ProtocolConfig = field(default_factory=ProtocolConfig)


def find_zoo(run: str | None, zoo: str | None) -> Path:
    """The zoo folder: ``zoo`` when given, else ``RUN/zoo`` or ``RUN/../zoo``."""
    if zoo:
        return Path(zoo)
    if run:
        for cand in (Path(run) / "zoo", Path(run).parent / "zoo"):
            if cand.is_dir():
                return cand
    raise ValueError(f"zoo: not given and no zoo folder beside run {run!r}; pass --zoo ZOO")


def _run_method(ctx, task, name: str, strict: bool) -> dict[str, Any]:
    from dynadiff_fast.baselines import method_module

    module = method_module(name)
    log.info("%s: adapting %s to %d environments", task.domain, name, task.n_env)
    try:
        with nvtx_range(f"eval/{name}"):
            return module.run(ctx, task)
    except Exception as err:  # a method that cannot run is recorded in the report, not hidden
        if strict:
            raise
        log.error("method %s failed on %s: %s\n%s", name, task.domain, err, traceback.format_exc())
        return {key: f"{type(err).__name__}: {err}" for key in module.NAMES}


def evaluate_task(ctx, ds, task, methods, strict: bool, env_chunk: int | None, keep: int, gaussian: bool):
    """Scores of every method's result keys on one task -> ({key: summary}, {key: kept predictions})."""
    from dynadiff_fast.eval import probabilistic
    from dynadiff_fast.eval.protocol import truth

    true = truth(ds, task)
    frame_dims = true.dim() - 3
    labels = [
        f"env {e} ({', '.join(f'{v:.3g}' for v in p)})"
        for e, p in zip(task.envs.tolist(), task.params.tolist(), strict=True)
    ]
    results, kept = {}, {"truth": true[:keep, 0], "labels": labels[:keep]}
    # ensembles (K >= 2): every member's rollout of the first environment's first test trajectory at one point
    kept["truth_probe"], kept["ensemble_probe"] = probabilistic.probe(true[0, 0], frame_dims), {}
    for name in methods:
        for key, adapted in _run_method(ctx, task, name, strict).items():
            if ctx.keys is not None and key not in ctx.keys:
                continue
            if isinstance(adapted, str):
                results[key] = {"error": adapted}
                continue
            parts, ensemble = [], []
            with nvtx_range("eval/rollout"):
                for sl in env_chunks(task.n_env, env_chunk):
                    pred = adapted.rollout(sl, task.x0[sl].to(ctx.device), task.steps).cpu()
                    parts.append(score(pred, true[sl], gaussian))
                    if adapted.k > 1:
                        ensemble.append(probabilistic.score_ensemble(pred, true[sl]))
                        if sl.start == 0:
                            kept["ensemble_probe"][key] = probabilistic.probe(pred[0, :, 0], frame_dims)
                    if sl.start < keep:  # first predictor, first test trajectory of the figure environments
                        kept.setdefault(key, []).append(pred[: keep - sl.start, 0, 0])
            kept[key] = torch.cat(kept[key]) if key in kept else None
            summary = summarize(cat_scores(parts), task)
            if ensemble:
                probabilistic.add_summary(summary, probabilistic.cat_ensemble_scores(ensemble), task)
            summary["adapt_seconds"] = adapted.seconds
            summary["samples_per_env"] = adapted.k
            summary["info"] = adapted.info
            results[key] = summary
            log.info(
                "%-28s %-10s rmse %.4f  (%.1f s to adapt)", key, task.domain, summary["rmse"]["mean"], adapted.seconds
            )
    return results, kept


def evaluate(
    ds,
    zoo,
    run_dir=None,
    methods=None,
    protocol: ProtocolConfig | None = None,
    preset: str = "tiny",
    n_samples: int = N_SAMPLES,
    seed: int = 0,
    device: torch.device | str = "cpu",
    env_chunk: int | None = None,
    figure_envs: int = 3,
    strict: bool = False,
    budget: dict[str, Any] | None = None,
) -> tuple[dict, dict]:
    """Evaluate ``methods`` (names of ``baselines.METHODS`` or result keys; None: all) on both domains of ``ds``.

    Returns ``(results, kept)``: results as written to results.json (without the file metadata the CLI
    adds), and per domain the truth and each result key's first-trajectory predictions of the first
    ``figure_envs`` environments (``[n, T+1, C, *S]``) for the figures. ``budget``: overrides of the preset's
    baseline budget (``baselines.common.Budget`` fields).
    """
    from dynadiff_fast.baselines import resolve_methods
    from dynadiff_fast.baselines.common import Context, budget_for

    methods, keys = resolve_methods(methods)
    protocol = protocol or ProtocolConfig()
    ctx = Context(ds, zoo, run_dir, budget_for(preset, budget), seed, torch.device(device), n_samples, keys)
    results: dict[str, Any] = {"methods": {}, "domains": {}}
    kept: dict[str, dict] = {}
    for domain in DOMAINS:
        task = make_task(ds, domain, protocol)
        results["domains"][domain] = {
            "envs": task.envs.tolist(),
            "params": task.params.tolist(),
            "split": task.subsplit,
            "test_trajs": task.test_trajs,
            "steps": task.steps,
        }
        per_key, kept[domain] = evaluate_task(
            ctx, ds, task, methods, strict, env_chunk, figure_envs, protocol.gaussian_ssim
        )
        for key, summary in per_key.items():
            results["methods"].setdefault(key, {})[domain] = summary
    return results, kept


def run_evaluation(cfg: EvaluateConfig) -> dict:
    """Evaluate as ``cfg`` says and write results.json, report.md, figures/ and config.yaml under
    ``cfg.out``; returns the results document."""
    from dynadiff_fast.baselines import resolve_methods
    from dynadiff_fast.data import EnvDataset
    from dynadiff_fast.eval import figures
    from dynadiff_fast.experts.zoo import Zoo
    from dynadiff_fast.generative.dynadiff import check_run
    from dynadiff_fast.stages import report

    if not cfg.data or not cfg.out:
        raise ValueError("data / out: required (pass --data FILE.h5 and --out DIR)")
    modules, _ = resolve_methods(cfg.methods)  # an unknown method name fails now, before the data and zoo load
    if "dynadiff" in modules and cfg.run is None:
        raise ValueError(
            "run: the DynaDiff methods need the run `dynadiff train all` wrote (--run RUN), or leave them out "
            '(--methods "[base, ccm, ...]")'
        )
    out = Path(cfg.out)
    device = resolve_device(cfg.device)
    zoo_dir = find_zoo(cfg.run, cfg.zoo)
    with EnvDataset.open(cfg.data) as ds:
        zoo = Zoo.open(zoo_dir)
        zoo.check_dataset(ds)  # a foreign zoo or run is refused before any output exists
        if cfg.run is not None:
            check_run(cfg.run, ds, zoo)
        with io.output_lock(out, "dynadiff evaluate"):
            config_mod.save_resolved(cfg, out / "config.yaml", seed=cfg.seed)
            results, kept = evaluate(
                ds,
                zoo,
                cfg.run,
                cfg.methods,
                cfg.protocol,
                cfg.preset,
                cfg.n_samples,
                cfg.seed,
                device,
                cfg.env_chunk,
                cfg.figure_envs,
                cfg.strict,
                cfg.budget,
            )
            doc = report.results_document(results, ds, cfg, zoo_dir)
            report.write(out, doc)
            figures.write_all(out / "figures", doc, kept, ds.channel_names)
        return doc


def _run(cfg: EvaluateConfig) -> int:
    from dynadiff_fast.stages import report

    print(report.table(run_evaluation(cfg)))
    return 0


COMMAND = Command(
    config=EvaluateConfig,
    run=_run,
)
