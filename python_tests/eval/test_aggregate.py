"""Multi-seed benchmark statistics: per-seed means, t intervals over seeds, paired ratios, verdict, report."""

import math

import pytest
from scipy import stats

from dynadiff_fast.eval.aggregate import (
    DOMAINS4,
    aggregate,
    paired,
    per_env_rmse,
    report_markdown,
    summary_figure,
)

SPLITS = {0: "seen", 1: "seen", 2: "seen", 3: "unseen_in", 4: "unseen_in", 5: "unseen_out", 6: "unseen_out"}
SEEDS = [0, 1, 2]


def ref_rmse(seed: int, env: int) -> float:
    return 0.1 * (1 + env) * (1 + 0.2 * seed)


def entry(rmse: dict[int, float], domain: str) -> dict:
    """One method/domain entry as ``protocol.summarize`` writes it (the fields the aggregation reads)."""
    envs = [e for e in rmse if (SPLITS[e] == "seen") == (domain == "in_domain")]
    vals = [rmse[e] for e in envs]
    return {
        "rmse": {"mean": sum(vals) / len(vals), "std": 0.0},
        "per_env": [{"env": e, "params": [float(e)], "split": SPLITS[e], "rmse": rmse[e]} for e in envs],
        "adapt_seconds": 0.1,
    }


def make_doc(seed: int, factors: dict, system: str = "lambda_omega", failed: tuple = ()) -> dict:
    """A per-seed results.json: method -> factor(seed, env) times the reference RMSE; ``failed`` methods
    report ``{"error": ...}`` in both domains."""
    methods = {}
    for name, f in factors.items():
        rmse = {e: f(seed, e) * ref_rmse(seed, e) for e in SPLITS}
        methods[name] = {
            d: {"error": "diverged"} if name in failed else entry(rmse, d) for d in ("in_domain", "out_domain")
        }
    return {"system": system, "methods": methods}


def jitter(k: int):
    """A factor within 2% of 1, different for every (seed, env): exact ties send scipy's Wilcoxon to a
    2^n-permutation test, so only the one method that must be exactly uniform (ccm) has them."""
    return lambda s, e: math.exp(2e-4 * k * (1 + e + 7 * s))


def noise(seed: int, env: int) -> float:
    """Zero-mean multiplicative noise: log-ratios 0.05 sin(.) over the (seed, env) pairs."""
    return math.exp(0.05 * math.sin(1 + 2.3 * env + 5.1 * seed))


FACTORS = {
    "dynadiff_prefix": lambda s, e: 1.0,
    "ccm": lambda s, e: 1.1,
    "one_per_env": lambda s, e: jitter(1)(s, e) / 1.2,
    "dynadiff_none": lambda s, e: 1.05 * jitter(2)(s, e),
    "dynadiff_shuffled": lambda s, e: 1.05 * 1.3 * jitter(3)(s, e),
}


@pytest.fixture(scope="module")
def better():
    """DynaDiff uniformly 10% better than the only gradient-free baseline; seed 1's `base` failed."""
    factors = {**FACTORS, "base": lambda s, e: 2.0 * jitter(4)(s, e)}
    docs = [make_doc(s, factors, failed=("base",) if s == 1 else ()) for s in SEEDS]
    return docs, aggregate(docs, SEEDS, system="lambda_omega", preset="tiny")


TIED_FACTORS = {k: f for k, f in FACTORS.items() if k != "ccm"}


@pytest.fixture(scope="module")
def tied():
    """A gradient-free baseline equal to DynaDiff up to symmetric noise."""
    docs = [make_doc(s, {**TIED_FACTORS, "soup_uniform": noise}) for s in SEEDS]
    return aggregate(docs, SEEDS, system="lambda_omega", preset="tiny")


def test_per_env_rmse_reads_the_sub_splits(better):
    docs, _ = better
    assert set(per_env_rmse(docs[0], "ccm", "in_domain")) == {0, 1, 2}
    assert set(per_env_rmse(docs[0], "ccm", "out_domain")) == {3, 4, 5, 6}
    assert per_env_rmse(docs[0], "ccm", "unseen_in") == pytest.approx({3: 1.1 * 0.4, 4: 1.1 * 0.5})
    assert set(per_env_rmse(docs[0], "ccm", "unseen_out")) == {5, 6}
    assert per_env_rmse(docs[1], "base", "in_domain") is None  # failed
    assert per_env_rmse(docs[0], "absent", "out_domain") is None
    only_in = {"methods": {"m": {"out_domain": entry({3: 1.0}, "out_domain")}}}
    assert per_env_rmse(only_in, "m", "unseen_out") is None  # no env of that sub-split


def test_document_keys(better):
    _, agg = better
    assert agg["format"] == "dynadiff-benchmark-results" and agg["version"] == 1
    assert (agg["system"], agg["preset"], agg["seeds"], agg["reference"]) == (
        "lambda_omega",
        "tiny",
        SEEDS,
        "dynadiff_prefix",
    )
    assert set(agg["methods"]["ccm"]) == set(DOMAINS4)
    assert set(agg["methods"]["ccm"]["unseen_in"]["rmse"]) == {"mean", "ci95", "per_seed", "n_seeds"}
    assert "dynadiff_prefix" not in agg["paired"]
    assert set(agg["paired"]["ccm"]["out_domain"]) == {"ratio_mean", "ratio_ci95", "win_rate", "n_pairs", "p_value"}
    assert set(agg["controls"]["in_domain"]) == {"ratio_mean", "ratio_ci95", "win_rate", "n_pairs"}
    assert set(agg["targets"]["unseen_out"]) == {
        "vs_one_per_env",
        "vs_best_gradient_free",
        "best_gradient_free",
        "control",
    }


@pytest.mark.parametrize(
    ("domain", "envs"), [("in_domain", [0, 1, 2]), ("unseen_in", [3, 4]), ("out_domain", [3, 4, 5, 6])]
)
def test_per_seed_means_are_env_means(better, domain, envs):
    _, agg = better
    per_seed = agg["methods"]["dynadiff_prefix"][domain]["rmse"]["per_seed"]
    assert per_seed == pytest.approx([sum(ref_rmse(s, e) for e in envs) / len(envs) for s in SEEDS])


def test_t_interval_over_seeds(better):
    _, agg = better
    s = agg["methods"]["ccm"]["unseen_in"]["rmse"]
    vals = [1.1 * (ref_rmse(k, 3) + ref_rmse(k, 4)) / 2 for k in SEEDS]
    mean = sum(vals) / 3
    sd = math.sqrt(sum((v - mean) ** 2 for v in vals) / 2)
    half = stats.t.ppf(0.975, 2) * sd / math.sqrt(3)
    assert s["mean"] == pytest.approx(mean) and s["n_seeds"] == 3
    assert s["ci95"] == pytest.approx([mean - half, mean + half])
    assert s["ci95"][0] < s["mean"] < s["ci95"][1]


def test_one_seed_interval_is_the_mean():
    agg = aggregate([make_doc(0, FACTORS)], [0], system="lambda_omega", preset="tiny")
    s = agg["methods"]["ccm"]["in_domain"]["rmse"]
    assert s["ci95"] == [s["mean"], s["mean"]]


def test_uniformly_worse_method(better):
    _, agg = better
    for d in DOMAINS4:
        p = agg["paired"]["ccm"][d]
        assert p["ratio_mean"] == pytest.approx(1.1)
        assert p["ratio_ci95"][0] > 1 and p["ratio_ci95"] == pytest.approx([1.1, 1.1])
        assert p["win_rate"] == 1.0
        assert p["p_value"] < 0.05
        assert agg["targets"][d]["best_gradient_free"] == "ccm"  # base (2x worse) is not the hardest rival
        assert agg["targets"][d]["vs_best_gradient_free"] is True
    assert "unseen_in: DynaDiff is better than ccm, the best gradient-free baseline, by 10.0%" in agg["verdict"][0]


def test_paired_edge_cases():
    # a tie is no win for the reference; with all log-ratios zero there is nothing to test
    p = paired([1.0, 1.0, 1.2, 0.9])
    assert p["win_rate"] == 0.25 and p["n_pairs"] == 4 and p["ratio_mean"] == pytest.approx(1.025)
    assert paired([1.0, 1.0])["p_value"] is None and paired([1.0, 1.0])["ratio_ci95"] == [1.0, 1.0]
    assert paired([1.3])["ratio_ci95"] == [1.3, 1.3] and paired([1.3])["p_value"] is None
    assert paired([]) == {"ratio_mean": None, "ratio_ci95": None, "win_rate": None, "n_pairs": 0, "p_value": None}


def test_noisy_equal_method_is_not_distinguishable(tied):
    p = tied["paired"]["soup_uniform"]["out_domain"]
    assert p["ratio_ci95"][0] < 1 < p["ratio_ci95"][1]
    assert 0.3 < p["win_rate"] < 0.7
    assert p["p_value"] > 0.2
    assert tied["targets"]["out_domain"]["best_gradient_free"] == "soup_uniform"
    assert tied["targets"]["out_domain"]["vs_best_gradient_free"] is False
    assert any(
        s.startswith("out_domain: DynaDiff and soup_uniform") and "not distinguishable" in s for s in tied["verdict"]
    )


def test_bootstrap_is_deterministic(tied):
    docs = [make_doc(s, {**TIED_FACTORS, "soup_uniform": noise}) for s in SEEDS]
    again = aggregate(docs, SEEDS, system="lambda_omega", preset="tiny")
    assert again["paired"] == tied["paired"]


def test_failed_seed_gives_none_and_fewer_pairs(better):
    _, agg = better
    assert agg["methods"]["base"]["in_domain"]["rmse"]["per_seed"][1] is None
    assert agg["methods"]["base"]["in_domain"]["rmse"]["n_seeds"] == 2
    assert agg["paired"]["base"]["in_domain"]["n_pairs"] == 2 * 3
    assert agg["paired"]["ccm"]["in_domain"]["n_pairs"] == 3 * 3


def test_oracle_and_control_targets(better):
    _, agg = better
    assert agg["oracle"]["unseen_out"]["ratio_mean"] == pytest.approx(1.2, rel=0.02)
    assert agg["controls"]["unseen_out"]["ratio_mean"] == pytest.approx(1.3, rel=0.02)
    assert agg["targets"]["unseen_out"]["vs_one_per_env"] is True
    assert agg["targets"]["unseen_out"]["control"] is True
    assert any("within the 1.25 target" in s for s in agg["verdict"])
    assert any("% higher" in s and "meets the 20.0% target" in s for s in agg["verdict"])


def test_missing_methods_give_none_targets():
    docs = [make_doc(s, {"dynadiff_prefix": FACTORS["dynadiff_prefix"]}) for s in SEEDS]
    agg = aggregate(docs, SEEDS, system="lambda_omega", preset="tiny")
    assert agg["targets"]["in_domain"] == {
        "vs_one_per_env": None,
        "vs_best_gradient_free": None,
        "best_gradient_free": None,
        "control": None,
    }


def test_bad_input():
    docs = [make_doc(s, FACTORS) for s in SEEDS]
    with pytest.raises(ValueError, match="no per-seed results"):
        aggregate([], [], system="lambda_omega", preset="tiny")
    with pytest.raises(ValueError, match=r"3 results documents for 2 seeds"):
        aggregate(docs, [0, 1], system="lambda_omega", preset="tiny")
    other = docs[:2] + [make_doc(2, FACTORS, system="navier_stokes")]
    with pytest.raises(ValueError, match="seed 2's results are for navier_stokes, expected lambda_omega"):
        aggregate(other, SEEDS, system="lambda_omega", preset="tiny")
    with pytest.raises(ValueError, match="seed 0's results are for lambda_omega, expected navier_stokes"):
        aggregate(docs, SEEDS, system="navier_stokes", preset="tiny")


def test_report_markdown(better):
    _, agg = better
    md = report_markdown(agg, stage_times={0: {"zoo": 12.0, "dit": 30.5}}, diagnostics={"Notes": "*verbatim* text"})
    assert md.startswith("# DynaDiff benchmark: lambda_omega, preset tiny, 3 seeds")
    for name in agg["methods"]:
        assert name in md
    for sentence in agg["verdict"]:
        assert sentence in md
    assert "| 0 | 12.0 | 30.5 | 42.5 |" in md
    assert "## Notes\n\n*verbatim* text" in md
    assert "failed" in md  # base's failed seed


def test_summary_figure(better, tmp_path):
    _, agg = better
    path = tmp_path / "figs" / "summary.png"
    summary_figure(agg, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 1000
    assert [p.name for p in path.parent.iterdir()] == ["summary.png"]  # no temp file left


def test_ensemble_scores_are_aggregated_like_the_rmse(better):
    """An ensemble method's per-environment CRPS / spread-skill / coverage -> per-seed means -> t interval over
    seeds; methods without ensemble scores get none; the report gets the calibration table."""
    docs, _ = better
    docs = [dict(d, methods=dict(d["methods"])) for d in docs]
    for s, doc in enumerate(docs):
        ens = {}
        for d, e in make_doc(s, {"soup_members": lambda s, e: 1.2})["methods"]["soup_members"].items():
            e["per_env"] = [dict(row, crps=0.5 * row["rmse"], spread_skill=0.6 + 0.1 * s, coverage90=0.7)
                            for row in e["per_env"]]  # fmt: skip
            ens[d] = e
        doc["methods"]["soup_members"] = ens
    agg = aggregate(docs, SEEDS, system="lambda_omega", preset="tiny")
    m = agg["methods"]["soup_members"]["unseen_in"]
    crps = [0.5 * 1.2 * (ref_rmse(s, 3) + ref_rmse(s, 4)) / 2 for s in SEEDS]
    assert m["crps"]["per_seed"] == pytest.approx(crps)
    half = stats.t.ppf(0.975, 2) * stats.tstd(crps) / math.sqrt(3)
    assert m["crps"]["ci95"] == pytest.approx([sum(crps) / 3 - half, sum(crps) / 3 + half])
    assert m["spread_skill"]["mean"] == pytest.approx(0.7) and m["coverage90"]["n_seeds"] == 3
    assert set(agg["methods"]["ccm"]["in_domain"]) == {"rmse"}
    text = report_markdown(agg)
    assert "## Uncertainty: the ensembles" in text and "| soup_members | unseen_out |" in text
