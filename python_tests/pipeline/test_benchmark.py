"""``dynadiff benchmark`` orchestration: per-seed runs share the split and differ in every other seed, the
observation-budget stages skip the main L, bad settings fail with one clear line, and the tables it writes."""

import pytest

from dynadiff_fast.stages import benchmark as bm


def test_seeds_share_the_split_and_own_a_folder(tmp_path):
    cfg = bm.BenchmarkConfig(out=str(tmp_path), seeds=(0, 3))
    a, b = bm.demo_config(cfg, 0), bm.demo_config(cfg, 3)
    assert a.split_seed == b.split_seed == cfg.split_seed and (a.seed, b.seed) == (0, 3)
    assert a.out != b.out and a.out.endswith("seed_0")
    assert a.prompt_len == max(cfg.obs_len, *cfg.obs_budget)  # the prompter sees the longest budget L in training
    names = [s.name for s in bm.extra_stages(cfg, a)]
    assert names == ["diagnostics"] + [f"obs_budget_{n}" for n in cfg.obs_budget if n != cfg.obs_len]


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("seeds", (), "seeds"),
        ("seeds", (1, 1), "seeds"),
        ("obs_budget", (1, 5), "obs_budget"),
        ("n_samples", 0, "n_samples"),
    ],
)
def test_bad_settings_are_one_line_errors(field, value, match):
    with pytest.raises(ValueError, match=match):
        bm.BenchmarkConfig(**{field: value})  # checked when built, so the CLI reports it before any work


def test_a_system_without_the_preset_is_refused_up_front(capsys):
    from dynadiff_fast import cli

    assert cli.main(["benchmark", "-q", "--system", "cylinder_flow"]) == 2
    assert "dynadiff benchmark: error: preset: 'bench' has no cylinder_flow entry" in capsys.readouterr().err


def _diag(weight_nn):
    return {
        "vae": {"rmse_decoded_mean": 0.2, "rmse_original_mean": 0.1, "fraction_within_5pct": 0.5},
        "prompter": {"seen": {"r2": [0.9]}, "unseen": {"r2": [None]}},
        "dit": {
            "summary": {"seen": {"ratio_mean": 0.1, "snap_rate": 1.0}, "unseen": {"ratio_mean": 0.5, "snap_rate": 0.5}}
        },
        "memorisation": {
            "summary": {"weight_nn_mean": weight_nn, "function_nn_mean": 0.01},
            "zoo": {"weight_within": 1.0, "weight_between": 2.0, "function_within": 0.1, "function_between": 0.2},
        },
    }


def test_diagnostics_summary_means_over_seeds_and_renders():
    summary = bm.summarize_diagnostics({0: _diag(1.0), 1: _diag(3.0)})
    assert summary["mean"]["memo_weight_nn"] == 2.0 and summary["mean"]["vae_decoded_over_original"] == 2.0
    assert summary["mean"]["prompter_r2_unseen"] is None  # no seed could compute it: not a made-up number
    text = bm.diagnostics_markdown(summary)
    assert "seed 0" in text and "seed 1" in text and "n/a" in text
    assert bm.summarize_diagnostics({}) == {}
    verdict = bm.stage_verdict(summary)  # VAE 2.0 fails its 1.05 bar first; the prompter has no R^2 (fails)
    assert verdict[-1] == "first stage to lose the signal: VAE" and "fails" in verdict[1]


def test_budget_markdown_lists_every_method_and_length():
    table = {"out_domain": {"dynadiff_prefix": {"2": {"mean": 0.5, "ci95": [0.4, 0.6]}, "10": {"mean": 0.3, "ci95": [0.2, 0.4]}},
                            "ccm": {"2": {"mean": 0.6, "ci95": [0.5, 0.7]}}}}  # fmt: skip
    text = bm.budget_markdown(table)
    assert "L = 2" in text and "L = 10" in text and "dynadiff_prefix" in text and "ccm" in text
    assert "n/a" in text  # ccm has no L = 10 entry
