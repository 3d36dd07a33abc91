"""The protocol-level ensemble scores (``eval.probabilistic``) against the point metrics applied by hand."""

import math
from types import SimpleNamespace

import pytest
import torch

from dynadiff_fast.eval.probabilistic import add_summary, cat_ensemble_scores, probe, score_ensemble
from dynadiff_fast.metrics import crps_ensemble, pit_coverage, rank_histogram


@pytest.fixture
def ensemble(rng):
    true = torch.randn(3, 2, 6, 1, 5, 5, generator=rng)  # [N, B, T+1, C, H, W]
    pred = true[:, None] + 0.7 * torch.randn(3, 4, 2, 6, 1, 5, 5, generator=rng)  # K = 4, T = 5
    return pred, true


def test_scores_are_the_point_metrics_per_env_traj_and_step(ensemble):
    pred, true = ensemble
    s = score_ensemble(pred, true)
    assert s.crps.shape == s.spread2.shape == (3, 2, 5) and s.coverage.shape == (3, 2, 5, 2) and s.members == 4
    for n, b, t in [(0, 0, 0), (2, 1, 4), (1, 0, 2)]:
        p, y = pred[n, :, b, t + 1], true[n, b, t + 1]
        assert s.crps[n, b, t].item() == pytest.approx(crps_ensemble(p, y).double().mean().item(), rel=1e-6)
        assert s.spread2[n, b, t].item() == pytest.approx(p.double().var(0).mean().item(), rel=1e-9)
        assert s.error2[n, b, t].item() == pytest.approx((p.double().mean(0) - y).square().mean().item(), rel=1e-9)
        assert s.coverage[n, b, t, 1].item() == pytest.approx(pit_coverage(p, y, 0.9).double().mean().item())
    torch.testing.assert_close(s.rank_hist[1], rank_histogram(pred[1, :, :, 1:], true[1, :, 1:]))
    whole = cat_ensemble_scores([score_ensemble(pred[:1], true[:1]), score_ensemble(pred[1:], true[1:])])
    torch.testing.assert_close(whole.crps, s.crps)
    with pytest.raises(ValueError, match="K >= 2"):
        score_ensemble(pred[:, :1], true)


def test_summary_per_env_and_domain(ensemble):
    pred, true = ensemble
    s = score_ensemble(pred, true)
    task = SimpleNamespace(subsplit=["unseen_in", "unseen_in", "unseen_out"])
    summary = add_summary({"per_env": [{"env": i} for i in range(3)]}, s, task)
    for n, row in enumerate(summary["per_env"]):
        p, y = pred[n, :, :, 1:].double(), true[n, :, 1:].double()
        ratio = math.sqrt(5 / 4 * p.var(0).mean().item() / (p.mean(0) - y).square().mean().item())
        assert row["spread_skill"] == pytest.approx(ratio, rel=1e-9)
        assert row["crps"] == pytest.approx(crps_ensemble(p, y).double().mean().item(), rel=1e-6)
        assert row["coverage50"] == pytest.approx(pit_coverage(p, y, 0.5).double().mean().item(), rel=1e-6)
    crps = [r["crps"] for r in summary["per_env"]]
    assert summary["crps"]["mean"] == pytest.approx(sum(crps) / 3)
    assert summary["by_split"]["unseen_out"]["crps"] == {"mean": pytest.approx(crps[2]), "std": 0.0}
    assert summary["ensemble_size"] == 4 and sum(summary["rank_hist"]) == pytest.approx(1.0)
    spread, skill = torch.tensor(summary["curve_spread"]), torch.tensor(summary["curve_skill"])
    torch.testing.assert_close(torch.tensor(summary["curve_spread_skill"]), spread / skill, rtol=1e-6, atol=0)


def test_probe_follows_one_point():
    frames = torch.arange(2 * 3 * 2 * 4 * 5.0).reshape(2, 3, 2, 4, 5)  # [.., C, H, W]
    torch.testing.assert_close(probe(frames, 3), frames[:, :, 0, 2, 2])
    torch.testing.assert_close(probe(frames[..., 0, 0, :], 1), frames[..., 0, 0, 0])
