"""The rollout protocol: domains, observation sequences, no access to future test frames, scoring."""

import pytest
import torch
from dd_synth import SPLIT, SynthDataset

from dynadiff_fast.eval.protocol import (
    ProtocolConfig,
    Scores,
    domain_envs,
    make_task,
    prefix_error,
    rollout,
    score,
    summarize,
    truth,
)


def test_domains_follow_the_split(synth_leaky):
    d = domain_envs(synth_leaky)
    assert d["in_domain"][0].tolist() == SPLIT["seen"]
    assert d["out_domain"][0].tolist() == SPLIT["unseen_in"] + SPLIT["unseen_out"]
    assert d["out_domain"][1] == ["unseen_in"] * 2 + ["unseen_out"]


def test_task_holds_no_future_test_frame(synth_leaky):
    # every test frame after frame 0 is NaN: a task that contained one would not be finite
    for domain in ("in_domain", "out_domain"):
        task = make_task(synth_leaky, domain, ProtocolConfig(obs_len=5))
        assert torch.isfinite(task.obs).all() and torch.isfinite(task.x0).all()
        assert task.test_trajs == list(range(synth_leaky.n_train_traj, synth_leaky.n_traj))
        assert not torch.isfinite(truth(synth_leaky, task)[:, :, 1:]).any()
        # the observations come from the (training) trajectory obs_traj, not from a test trajectory
        torch.testing.assert_close(task.obs, synth_leaky.data[task.envs, 0, :5])
        torch.testing.assert_close(task.x0, synth_leaky.data[task.envs][:, synth_leaky.n_train_traj :, 0])


def test_observation_trajectory_must_be_a_training_one(synth_leaky):
    with pytest.raises(ValueError, match="obs_traj"):
        make_task(synth_leaky, "in_domain", ProtocolConfig(obs_len=5, obs_traj=synth_leaky.n_train_traj))
    with pytest.raises(ValueError, match="obs_len"):
        make_task(synth_leaky, "in_domain", ProtocolConfig(obs_len=1))
    with pytest.raises(ValueError, match="rollout_steps"):
        make_task(synth_leaky, "in_domain", ProtocolConfig(obs_len=5, rollout_steps=synth_leaky.n_frames))
    with pytest.raises(ValueError, match="domain"):
        make_task(synth_leaky, "sideways")


def test_rollout_and_prefix_error():
    x0 = torch.ones(2, 3, 1, 4, 4)
    traj = rollout(lambda x: 2 * x, x0, 3)
    assert traj.shape == (2, 3, 4, 1, 4, 4)
    torch.testing.assert_close(traj[:, :, 3], 8 * x0)
    obs = traj[:, 0]  # [N=2, L=4, ...]
    cands = torch.stack([traj[:, 0], traj[:, 0] + 1], dim=1)  # [N, K=2, L, ...]
    err = prefix_error(cands, obs)
    torch.testing.assert_close(err, torch.tensor([[0.0, 1.0], [0.0, 1.0]]))


def test_score_and_summary_on_exact_and_perturbed_predictions():
    ds = SynthDataset()
    task = make_task(ds, "out_domain", ProtocolConfig(obs_len=4))
    true = truth(ds, task)
    pred = torch.stack([true, true + 0.5], dim=1)  # K=2: exact, and off by 0.5 everywhere
    s = score(pred, true)
    assert s.rmse.shape == (task.n_env, 2, len(task.test_trajs), task.steps)
    torch.testing.assert_close(s.rmse[:, 0], torch.zeros_like(s.rmse[:, 0]))
    torch.testing.assert_close(s.rmse[:, 1], torch.full_like(s.rmse[:, 1], 0.5))
    torch.testing.assert_close(s.ssim[:, 0], torch.ones_like(s.ssim[:, 0]))
    summary = summarize(s, task)
    assert summary["rmse"]["mean"] == pytest.approx(0.25)
    assert summary["rmse"]["std"] == pytest.approx(0.25)
    assert len(summary["curve_rmse"]) == task.steps
    assert [e["env"] for e in summary["per_env"]] == task.envs.tolist()
    assert summary["per_env"][0]["rmse_std"] == pytest.approx(0.25)
    assert set(summary["by_split"]) == {"unseen_in", "unseen_out"}


def test_score_rejects_divergence():
    true = torch.zeros(1, 1, 3, 1, 12, 12)
    pred = torch.full((1, 1, 1, 3, 1, 12, 12), float("inf"))
    with pytest.raises(ValueError, match="diverged"):
        score(pred, true)
    assert isinstance(score(true[:, None], true), Scores)
