"""The evaluation driver end to end on the synthetic family: results.json schema, report, figures."""

import json

import matplotlib.image
import pytest
import torch
from dd_synth import SynthDataset, SynthZoo

import dynadiff_fast.baselines.prefix_finetune as pf
from dynadiff_fast.baselines import METHODS, result_keys
from dynadiff_fast.baselines.common import Adapted, Budget
from dynadiff_fast.eval import figures
from dynadiff_fast.eval.protocol import DOMAINS, ProtocolConfig
from dynadiff_fast.stages import report
from dynadiff_fast.stages.evaluate import EvaluateConfig, evaluate


class FakeDynaDiff:
    """DynaDiff stand-in: 'generates' the base model for every sample (the interface is what is tested)."""

    @staticmethod
    def run(ctx, task):
        from dynadiff_fast.baselines import base
        from dynadiff_fast.baselines.dynadiff import NAMES

        a = base.run(ctx, task)["base"]
        return {k: Adapted(a.rollout, 0.1, 1, {}) for k in NAMES}


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setattr(pf, "STEPS", (2, 5, 10))
    mp.setattr(pf, "NAMES", tuple(f"prefix_finetune_{k}" for k in (2, 5, 10)))
    import dynadiff_fast.baselines.common as common

    tiny = Budget(conditioned_epochs=1, context_epochs=1, context_steps=3, search_points=5)
    mp.setitem(common.BUDGETS, "tiny", tiny)
    mp.setattr("dynadiff_fast.baselines.dynadiff.run", FakeDynaDiff.run)
    mp.setattr("dynadiff_fast.baselines.prefix_ensemble.STEPS", 5)
    ds = SynthDataset()
    proto = ProtocolConfig(obs_len=5)
    results, kept = evaluate(ds, SynthZoo(ds), None, protocol=proto, strict=True, env_chunk=2, figure_envs=2)
    out = tmp_path_factory.mktemp("eval")
    cfg = EvaluateConfig(data="synthetic.h5", out=str(out), protocol=proto)
    doc = report.results_document(results, ds, cfg, "zoo")
    report.write(out, doc)
    paths = figures.write_all(out / "figures", doc, kept, ds.channel_names)
    yield out, doc, paths, kept
    mp.undo()


def test_results_schema_has_every_method_for_both_domains(evaluated):
    out, doc, _, _ = evaluated
    on_disk = report.load(out / "results.json")
    assert on_disk["methods"].keys() == doc["methods"].keys()
    assert set(on_disk["methods"]) == set(result_keys(METHODS))
    for key, per in on_disk["methods"].items():
        for d in DOMAINS:
            e = per[d]
            assert "error" not in e, (key, d, e)
            assert set(e["rmse"]) == {"mean", "std"} and 0 <= e["ssim"]["mean"] <= 1
            assert len(e["curve_rmse"]) == len(e["curve_ssim"]) == on_disk["domains"][d]["steps"]
            assert len(e["per_env"]) == len(on_disk["domains"][d]["envs"])
            assert e["adapt_seconds"] >= 0
    assert on_disk["domains"]["out_domain"]["split"] == ["unseen_in", "unseen_in", "unseen_out"]


def test_ensembles_are_scored_beside_the_rmse(evaluated):
    """Methods with K >= 2 predictors get CRPS, spread/skill and coverage; single predictors do not."""
    out, doc, paths, kept = evaluated
    for key in ("soup_members", "prefix_finetune_ensemble"):
        for d in DOMAINS:
            e = doc["methods"][key][d]
            assert e["ensemble_size"] == e["samples_per_env"] >= 2
            for name in ("crps", "spread_skill", "coverage50", "coverage90"):
                per = [row[name] for row in e["per_env"]]
                assert set(e[name]) == {"mean", "std"} and e[name]["mean"] == pytest.approx(sum(per) / len(per))
                assert set(e["by_split"][doc["domains"][d]["split"][0]]) >= {"rmse", name}
            # CRPS <= each member's mean absolute error <= its RMSE, point by point and so on average
            assert 0 < e["crps"]["mean"] < e["rmse"]["mean"]
            assert 0 <= e["coverage50"]["mean"] <= e["coverage90"]["mean"] <= 1
            assert sum(e["rank_hist"]) == pytest.approx(1.0) and len(e["rank_hist"]) == e["ensemble_size"] + 1
            assert len(e["curve_spread"]) == len(e["curve_skill"]) == len(e["curve_crps"]) == e["steps"]
            assert kept[d]["ensemble_probe"][key].shape == (e["ensemble_size"], e["steps"] + 1)
    assert "crps" not in doc["methods"]["base"]["in_domain"]  # one predictor
    assert "nn_ensemble" not in kept["in_domain"]["ensemble_probe"]  # the synthetic zoo: one expert per environment
    assert "## Uncertainty: the ensembles" in (out / "report.md").read_text()
    assert {"spread_vs_error.png", "ensemble_band_in_domain.png"} <= {p.name for p in paths}


def test_chunked_scoring_matches_the_per_env_values(evaluated):
    # env_chunk=2 splits the 3 out-domain environments; the mean over per-env values must equal the total
    _, doc, _, _ = evaluated
    e = doc["methods"]["base"]["out_domain"]
    per = torch.tensor([row["rmse"] for row in e["per_env"]])
    assert e["rmse"]["mean"] == pytest.approx(float(per.mean()), rel=1e-6)


def test_report_states_wins_and_losses(evaluated):
    out, doc, _, _ = evaluated
    text = (out / "report.md").read_text()
    assert "| dynadiff_prefix |" in text and "| ccm |" in text
    assert "Where DynaDiff wins and where it loses" in text
    for d in DOMAINS:
        assert f"**{d}**" in text
    assert "LOSES to" in text  # the stand-in DynaDiff is the base model: CCM and the retrieval beat it
    assert "unseen_out: DynaDiff RMSE" in text and "vs best baseline ccm" in text


def test_figures_are_readable_pngs(evaluated):
    out, _, paths, kept = evaluated
    names = {p.name for p in paths}
    assert {"error_vs_step_in_domain.png", "rollout_out_domain.png", "env_errors.png"} <= names
    for p in paths:
        img = matplotlib.image.imread(p)
        assert img.ndim == 3 and img.shape[0] > 50 and img.shape[1] > 50
    assert kept["in_domain"]["truth"].shape[0] == 2


def test_two_parameter_environment_map(tmp_path, evaluated):
    _, doc, _, _ = evaluated
    doc2 = json.loads(json.dumps(doc))
    doc2["param_names"] = ["A", "s"]
    for per in doc2["methods"].values():
        for e in per.values():
            for i, row in enumerate(e["per_env"]):
                row["params"] = [row["params"][0], 0.1 * i]
    path = figures.env_errors(tmp_path / "map.png", doc2)
    assert matplotlib.image.imread(path).ndim == 3


def test_figures_when_every_method_failed(tmp_path, evaluated):
    """A results document whose methods all failed still gets its figures written (no map to draw), not a
    matplotlib error after the results were computed."""
    _, doc, _, _ = evaluated
    failed = json.loads(json.dumps(doc))
    failed["methods"] = {k: {d: {"error": "ValueError: boom"} for d in per} for k, per in doc["methods"].items()}
    for names in (["beta"], ["A", "s"]):
        failed["param_names"] = names
        figures.write_all(tmp_path / "figures", failed, {}, ["u"])
    assert figures.env_errors(tmp_path / "map.png", failed) is None


def test_cli_needs_a_run_for_the_dynadiff_methods(tmp_path, capsys):
    from dynadiff_fast.cli import main

    out = tmp_path / "e"
    assert (
        main(["evaluate", "-q", "--data", str(tmp_path / "x.h5"), "--out", str(out), "--methods", "dynadiff_prefix"])
        == 2
    )
    err = capsys.readouterr().err
    assert err.startswith("dynadiff evaluate: error: run: the DynaDiff methods need") and not out.exists()


def test_cli_checks_the_method_names_before_loading_anything(tmp_path, capsys):
    """An unknown method is one line naming the valid ones, before the (here missing) dataset is opened; a
    comma-separated list is split, not read character by character."""
    from dynadiff_fast.cli import main

    missing = str(tmp_path / "nosuch.h5")
    assert (
        main(["evaluate", "-q", "--data", missing, "--out", str(tmp_path / "e"), "--methods", "one_per_env,nope"]) == 2
    )
    err = capsys.readouterr().err
    assert err.startswith("dynadiff evaluate: error: methods: unknown 'nope'") and "one_per_env" in err
    assert err.count("\n") == 1 and not (tmp_path / "e").exists()
    assert (
        main(["evaluate", "-q", "--data", missing, "--out", str(tmp_path / "e"), "--methods", "one_per_env,base"]) == 2
    )
    err = capsys.readouterr().err  # valid names: the missing inputs are the error now
    assert err.startswith("dynadiff evaluate: error: ") and "methods" not in err
    assert main(["evaluate", "-q", "--out", str(tmp_path / "e")]) == 2
    assert "data / out: required" in capsys.readouterr().err
