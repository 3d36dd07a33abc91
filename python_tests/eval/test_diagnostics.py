"""Stage diagnostics and the memorisation audit on the tiny trained DynaDiff run of the generative tests
(the ``pipeline`` / ``dd`` fixtures of conftest.py): hand-computed R2, exact zeros for planted answers (true
parameters, a zoo centroid, a copied zoo expert), the interpolation of unseen centroids, finite outputs on the real
model, bad inputs."""

import math

import pytest
import torch

from dynadiff_fast.eval import diagnostics as diag


@pytest.fixture(scope="module")
def zoo(pipeline):
    from dynadiff_fast.experts.zoo import Zoo

    return Zoo.open(pipeline["zoo"])


@pytest.fixture(scope="module")
def envs(pipeline):
    """Two seen and two unseen environments: observations (5 frames of training trajectory 0), parameters,
    seen flags, and frame 0 of their test trajectories."""
    from dynadiff_fast.data import EnvDataset

    with EnvDataset.open(pipeline["data"]) as ds:
        seen_envs = ds.split["seen"].tolist()[:2]
        unseen_envs = torch.cat([ds.split["unseen_in"], ds.split["unseen_out"]]).tolist()[:2]
        ids = seen_envs + unseen_envs
        test = list(range(ds.n_train_traj, ds.n_traj))
        return dict(
            ids=ids,
            obs=ds.load(ids, trajs=[0], frames=slice(0, 5))[:, 0],
            params=ds.params[ids].double(),
            seen=torch.tensor([True, True, False, False]),
            frames=ds.load(ids, trajs=test, frames=[0])[:, :, 0],
        )


# ---- prompter ---------------------------------------------------------------------------------------------------
def test_prompter_r2_matches_hand_computation(dd, envs):
    out = diag.prompter_r2(dd, envs["obs"], envs["params"])
    m = dd.model
    with torch.no_grad():
        pred = (m.prompter.aux(m.prompter(envs["obs"])) * m.param_std + m.param_mean).double()
    p = envs["params"][:, 0]
    r2 = 1 - ((pred[:, 0] - p) ** 2).sum() / ((p - p.mean()) ** 2).sum()
    assert out["r2"][0] == pytest.approx(float(r2), rel=1e-9)
    assert out["rmse"][0] == pytest.approx(float((pred[:, 0] - p).square().mean().sqrt()), rel=1e-9)
    torch.testing.assert_close(torch.tensor([r["predicted"] for r in out["per_env"]], dtype=torch.float64), pred)
    assert out["param_names"] == ["k"] and "| k |" in diag.markdown(out)


def test_prompter_r2_is_one_for_true_parameters_and_none_without_variance(dd, envs, monkeypatch):
    params = envs["params"]
    monkeypatch.setattr(dd.model.prompter, "aux", lambda prompt: dd.model.standardize_params(params.float()))
    out = diag.prompter_r2(dd, envs["obs"], params)
    assert out["r2"][0] == pytest.approx(1.0, abs=1e-6) and out["rmse"][0] == pytest.approx(0.0, abs=1e-5)
    same = params[:1].expand(4, -1)
    assert diag.prompter_r2(dd, envs["obs"], same)["r2"] == [None]
    assert diag.r2_scores(torch.ones(1, 2), torch.zeros(1, 2)) == [None, None]


# ---- latents ----------------------------------------------------------------------------------------------------
def test_interpolation_weights():
    zp = torch.tensor([[0.0], [1.0], [3.0]], dtype=torch.float64)
    one = torch.ones(1, dtype=torch.float64)
    w = diag.interpolation_weights(zp, torch.tensor([2.5], dtype=torch.float64), one)
    torch.testing.assert_close(w, torch.tensor([0.0, 0.25, 0.75], dtype=torch.float64))
    for q, nearest in ((-2.0, 0), (7.0, 2), (1.0, 1)):  # outside the range: the nearest end; on a zoo env: itself
        w = diag.interpolation_weights(zp, torch.tensor([q], dtype=torch.float64), one)
        assert w[nearest] == 1 and w.sum() == 1
    grid = torch.tensor([[0, 0], [0, 1], [1, 0], [1, 1], [5, 5]], dtype=torch.float64)
    w = diag.interpolation_weights(grid, torch.tensor([0.5, 0.5], dtype=torch.float64), torch.ones(2))
    torch.testing.assert_close(w, torch.tensor([0.25, 0.25, 0.25, 0.25, 0.0], dtype=torch.float64))
    w = diag.interpolation_weights(grid, torch.tensor([5.0, 0.0], dtype=torch.float64), torch.tensor([1.0, 10.0]))
    inv = torch.tensor([1 / 5, 0, 1 / 4, 1 / 16.01**0.5, 1 / 0.5], dtype=torch.float64)  # scaled distances
    torch.testing.assert_close(w, inv / inv.sum())  # the farthest of the 5 (0, 1) is not among the 2^2 nearest


def test_latent_diagnostics_on_the_trained_model(dd, zoo, envs):
    out = diag.latent_diagnostics(dd, zoo, envs["obs"], envs["params"], envs["seen"], n_samples=2, steps=4)
    assert len(out["per_env"]) == 4
    zoo_envs = set(zoo.env_index.tolist())
    for row, seen in zip(out["per_env"], envs["seen"].tolist()):
        assert row["seen"] == seen and math.isfinite(row["ratio"]) and row["ratio"] >= 0
        assert row["nearest_zoo_env"] in zoo_envs
    for split in ("seen", "unseen"):
        s = out["summary"][split]
        assert s["n"] == 2 and math.isfinite(s["ratio_mean"]) and 0 <= s["snap_rate"] <= 1
    assert "| seen | 2 |" in diag.markdown(out)


def test_latent_diagnostics_zero_for_the_exact_centroid(dd, zoo, envs, monkeypatch):
    from dynadiff_fast.generative.vae import encode_zoo

    m = dd.model
    env = envs["ids"][0]
    x = m.standardize_latent(encode_zoo(zoo, dd.vae, dd.graph, dd.normalizer, dd.device))
    centroid = m.unstandardize_latent(x[zoo.env_index == env].mean(0))
    monkeypatch.setattr(m, "sample_latents", lambda prompts, noise, *a, **k: centroid.expand(len(prompts), -1, -1))
    out = diag.latent_diagnostics(dd, zoo, envs["obs"][:1], envs["params"][:1], envs["seen"][:1], n_samples=3)
    row = out["per_env"][0]
    assert row["d_gen"] == pytest.approx(0.0, abs=1e-10) and row["d_between"] > 0
    assert row["nearest_zoo_env"] == env and row["snapped"] and out["summary"]["unseen"]["n"] == 0


# ---- memorisation -----------------------------------------------------------------------------------------------
def test_memorisation_audit_on_the_trained_model(dd, zoo, envs):
    out = diag.memorisation_audit(dd, zoo, envs["obs"][1:3], envs["frames"][1:3], n_samples=2, steps=4)
    assert len(out["per_env"]) == 2 and out["summary"]["n_generated"] == 4
    for row in out["per_env"]:
        assert len(row["weight_nn"]) == len(row["function_nn"]) == len(row["nearest_zoo_env"]) == 2
        assert all(math.isfinite(v) and v > 0 for v in row["weight_nn"] + row["function_nn"])
    assert all(v is not None and math.isfinite(v) and v > 0 for v in out["zoo"].values())
    assert "zoo within env" in diag.markdown(out)


def test_memorisation_audit_finds_a_copied_zoo_expert(dd, zoo, envs, monkeypatch):
    i = 3
    copy = zoo.batched().select([i])
    monkeypatch.setattr(dd, "generate", lambda obs, n_samples=1, **k: (copy, torch.full((1,), float("nan"))))
    out = diag.memorisation_audit(dd, zoo, envs["obs"][:1], envs["frames"][:1], n_samples=1)
    row = out["per_env"][0]
    assert row["weight_nn"] == [0.0] and row["function_nn"][0] == pytest.approx(0.0, abs=1e-6)
    assert row["nearest_zoo_env"] == [int(zoo.env_index[i])]
    assert out["summary"]["below_within_rate"] == 1.0 and out["summary"]["weight_nn_over_within"] == 0.0


def test_rms_distances_and_nearest_within_between():
    a = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    torch.testing.assert_close(diag.rms_distances(a, a), torch.tensor([[0.0, 12.5**0.5], [12.5**0.5, 0.0]]))
    dist = torch.tensor([[0.0, 1.0, 5.0], [1.0, 0.0, 3.0], [5.0, 3.0, 0.0]])
    within, between = diag.nearest_within_between(dist, torch.tensor([0, 0, 1]))
    assert within == pytest.approx(1.0) and between == pytest.approx((5 + 3 + 3) / 3)


# ---- bad inputs -------------------------------------------------------------------------------------------------
def test_bad_inputs(dd, zoo, envs):
    obs, params, seen, frames = envs["obs"], envs["params"], envs["seen"], envs["frames"]
    with pytest.raises(ValueError, match=r"params: expected shape \[4, 1\].*\(3, 1\)"):
        diag.prompter_r2(dd, obs, params[:3])
    with pytest.raises(ValueError, match=r"params: expected shape \[4, 1\]"):
        diag.latent_diagnostics(dd, zoo, obs, params[:, 0], seen)
    with pytest.raises(ValueError, match=r"seen: expected a bool tensor of shape \[4\].*\(3,\)"):
        diag.latent_diagnostics(dd, zoo, obs, params, seen[:3])
    with pytest.raises(ValueError, match="seen: expected a bool"):
        diag.latent_diagnostics(dd, zoo, obs, params, seen.long())
    with pytest.raises(ValueError, match="seen: env 2 .* is no zoo environment"):
        diag.latent_diagnostics(dd, zoo, obs, params, torch.ones(4, dtype=torch.bool), n_samples=1, steps=1)
    with pytest.raises(ValueError, match="n_samples: expected an int >= 1, got 0"):
        diag.latent_diagnostics(dd, zoo, obs, params, seen, n_samples=0)
    with pytest.raises(ValueError, match=r"frames: expected \[4, B >= 1, 1, 12, 12\], got \(3,"):
        diag.memorisation_audit(dd, zoo, obs, frames[:3])
    with pytest.raises(ValueError, match="obs: frames of shape"):
        diag.prompter_r2(dd, obs[..., :10], params)
    with pytest.raises(ValueError, match="diag: expected a result"):
        diag.markdown({"r2": [1.0]})
