"""DynaDiff model + generation: a toy conditional latent distribution learned end to end (prompter + DiT
from observations), controls (shuffled / zero prompt) worse than real prompts, classifier-free guidance path.

Toy family: environment parameter ``a``; observations ``x_t = a + u0 * exp(-0.3 a t)`` (u0 a random field);
latent ``z(a) = W1 a + W2 (a^2 - 1.5)`` (+ small noise per "expert"). The prompter must read ``a`` from the
frames and the DiT must map the prompt to ``z(a)``: for held-out ``a`` the generated latents must be far closer
to the truth than the zoo-mean latent (the best an unconditional model can do in mean squared error).

Then the whole trained pipeline on disk (dataset -> zoo -> `train all` -> DynaDiff.load / generate / CLI) on a
stand-in system: shapes, selection, prompt controls, any L, bad inputs, broken run folders, resume.
"""

import json
import shutil
import warnings

import pytest
import torch

from dynadiff_fast.generative.dit import DiTConfig
from dynadiff_fast.generative.dynadiff import DynaDiffModel
from dynadiff_fast.generative.prompter import PrompterConfig

L_LAT, D_LAT, OBS = 6, 4, 5


def toy_latent(a, W1, W2):
    return W1 * a[:, None, None] + W2 * (a[:, None, None] ** 2 - 1.5)


def toy_observe(a, n_traj, T, g):
    u0 = torch.randn(len(a), n_traj, 1, 8, 8, generator=g)
    t = torch.arange(T).view(1, 1, T, 1, 1, 1)
    a6 = a.view(-1, 1, 1, 1, 1, 1)
    return a6 + u0[:, :, None] * torch.exp(-0.3 * a6 * t)


@pytest.fixture(scope="module")
def toy():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    W1, W2 = torch.randn(L_LAT, D_LAT, generator=g), torch.randn(L_LAT, D_LAT, generator=g)
    a_train = torch.linspace(0.5, 2.0, 24)
    pool = toy_observe(a_train, 8, 10, g)  # [env, traj, T, 1, 8, 8]
    z = toy_latent(a_train, W1, W2) + 0.02 * torch.randn(24, L_LAT, D_LAT, generator=g)
    cfg = DiTConfig(hidden_size=32, depth=2, num_heads=4, cond_dropout=0.1)
    model = DynaDiffModel(cfg, PrompterConfig(gru_hidden=16, spectral_modes=3), (L_LAT, D_LAT), (1, 8, 8), 1, 0)
    model.fit_latent_stats(z)
    model.fit_param_stats(a_train[:, None])

    def batch(B):
        e = torch.randint(0, 24, (B,), generator=g)
        tr = torch.randint(0, 8, (B,), generator=g)
        lengths = torch.randint(1, OBS + 1, (B,), generator=g)
        start = (torch.rand(B, generator=g) * (10 - lengths + 1)).long()
        frames = (start[:, None] + torch.arange(OBS)).clamp(max=9)
        return e, pool[e[:, None], tr[:, None], frames], lengths

    _, o, lengths = batch(256)
    model.prompter.fit_normalization(o, lengths)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    for _ in range(300):
        e, o, lengths = batch(32)
        n = torch.randint(0, model.schedule.T, (32,), generator=g)
        eps = torch.randn(32, L_LAT, D_LAT, generator=g)
        drop = torch.rand(32, generator=g) < 0.1
        l_diff, l_aux = model(o, lengths, z[e], a_train[e, None], n, eps, drop)
        opt.zero_grad()
        (l_diff + l_aux).backward()
        opt.step()
    model.eval()
    a_test = torch.tensor([0.6, 0.9, 1.25, 1.55, 1.85])  # between the training values: held out
    obs = toy_observe(a_test, 1, OBS, g)[:, 0]
    return dict(model=model, z=z, obs=obs, truth=toy_latent(a_test, W1, W2), a_test=a_test, g=g)


def sample_error(toy, prompts, guidance=None, steps=20):
    m = toy["model"]
    noise = torch.randn(len(prompts), L_LAT, D_LAT, generator=torch.Generator().manual_seed(1))
    z = m.sample_latents(prompts, noise, steps=steps, guidance=guidance)
    return (z - toy["truth"]).square().mean()


def test_generated_latents_beat_unconditional_mean(toy):
    with torch.no_grad():
        prompts = toy["model"].prompter(toy["obs"])
    err = sample_error(toy, prompts)
    err_mean = (toy["z"].mean(0) - toy["truth"]).square().mean()
    assert err < 0.25 * err_mean, (float(err), float(err_mean))


def test_prompt_controls_are_worse(toy):
    with torch.no_grad():
        prompts = toy["model"].prompter(toy["obs"])
    err = sample_error(toy, prompts)
    assert sample_error(toy, prompts.roll(2, dims=0)) > 3 * err  # shuffled across environments
    assert sample_error(toy, torch.zeros_like(prompts)) > 3 * err  # zero prompt


def test_aux_head_regresses_parameter(toy):
    m = toy["model"]
    with torch.no_grad():
        pred = m.prompter.aux(m.prompter(toy["obs"])) * m.param_std + m.param_mean
    err = (pred[:, 0] - toy["a_test"]).abs().mean()
    spread = (toy["a_test"] - toy["a_test"].mean()).abs().mean()
    assert err < 0.5 * spread


def test_any_observation_length_generates(toy):
    m = toy["model"]
    with torch.no_grad():
        for L in (1, 3, 9):
            obs = toy_observe(toy["a_test"], 1, L, toy["g"])[:, 0]
            z = m.sample_latents(m.prompter(obs), torch.randn(5, L_LAT, D_LAT), steps=5)
            assert z.shape == (5, L_LAT, D_LAT) and torch.isfinite(z).all()


def test_guidance_runs_and_scale_one_equals_conditional(toy):
    with torch.no_grad():
        prompts = toy["model"].prompter(toy["obs"])
    torch.testing.assert_close(sample_error(toy, prompts, guidance=1.0), sample_error(toy, prompts))
    assert torch.isfinite(sample_error(toy, prompts, guidance=2.0))


def test_guidance_needs_condition_dropout():
    m = DynaDiffModel(DiTConfig(hidden_size=8, depth=1, num_heads=2, cond_dropout=0.0), PrompterConfig(gru_hidden=4),
                      (2, 3), (1, 4, 4), 1, 0)  # fmt: skip
    with pytest.raises(ValueError, match="guidance"):
        m.sample_latents(torch.zeros(1, m.prompter.prompt_dim), torch.zeros(1, 2, 3), steps=2, guidance=2.0)


def test_latent_standardisation_round_trip(rng):
    m = DynaDiffModel(DiTConfig(hidden_size=8, depth=1, num_heads=2), PrompterConfig(gru_hidden=4), (3, 2),
                      (1, 4, 4), 2, 0)  # fmt: skip
    z = torch.randn(10, 3, 2, generator=rng) * torch.tensor([5.0, 0.1]) + 3
    m.fit_latent_stats(z)
    x = m.standardize_latent(z)
    torch.testing.assert_close(x.mean(0), torch.zeros(3, 2), atol=1e-5, rtol=0)
    torch.testing.assert_close(x.square().mean((0, 1)), torch.ones(2), atol=1e-4, rtol=0)
    torch.testing.assert_close(m.unstandardize_latent(x), z)


# ----------------------------------------------------------------------------------------------------------------
# The whole trained pipeline on disk: dataset -> zoo -> `train all` (VAE, DiT) -> DynaDiff.load / generate / CLI.
# The ``pipeline`` / ``dd`` fixtures (conftest.py) train it on a stand-in system (``Relax``: u -> 1 at rate k, exactly
# linear per step) in seconds; the models are deliberately undertrained: these tests check the mechanics, the API
# and the errors (quality: the toy above).
# ----------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def unseen_obs(pipeline):
    from dynadiff_fast.data import EnvDataset

    with EnvDataset.open(pipeline["data"]) as ds:
        envs = torch.cat([ds.split["unseen_in"], ds.split["unseen_out"]]).tolist()[:3]
        return ds.test(envs)[:, 0]  # [3, T, 1, 12, 12] standardised


def test_run_layout_and_load_both_ways(pipeline, dd):
    from dynadiff_fast.generative.dynadiff import DynaDiff

    run = pipeline["run"]
    assert (run / "vae").is_dir() and (run / "dit" / "dynadiff.json").exists() and (run / "config.yaml").exists()
    assert (run / "dit" / "checkpoints" / "step_00000012").is_dir()
    quality = json.loads((run / "dit" / "quality.json").read_text())
    assert quality["summary"]["n_envs"] == 6 and len(quality["per_env_ratio"]) == 6
    again = DynaDiff.load(run / "dit")
    assert again.manifest == dd.manifest and dd.system_name == "relax" and dd.frame_shape == (1, 12, 12)
    assert dd.model.reference_prompts.shape[0] == 6 and (dd.model.reference_env >= 0).all()
    early = DynaDiff.load(run, step=6)  # an earlier checkpoint's EMA weights
    assert not torch.equal(early.model.dit.final.linear.weight, dd.model.dit.final.linear.weight)
    with pytest.raises(FileNotFoundError, match="step 7"):
        DynaDiff.load(run, step=7)


def test_generate_shapes_select_and_determinism(dd, unseen_obs):
    obs = unseen_obs[:, :5]
    experts, scores = dd.generate(obs, n_samples=3, select="none", steps=5, seed=3)
    assert experts.num_experts == 9 and scores.shape == (9,) and torch.isfinite(scores).all()
    best, best_scores = dd.generate(obs, n_samples=3, select="prefix", steps=5, seed=3)
    assert best.num_experts == 3
    torch.testing.assert_close(best_scores, scores.view(3, 3).min(1).values)
    one, s1 = dd.generate(obs[0].numpy(), n_samples=1, steps=5, seed=3)  # [L, C, H, W] NumPy: one environment
    assert one.num_experts == 1 and s1.shape == (1,)
    y = one(obs[0, :1])
    assert y.shape == (1, 1, 1, 12, 12) and torch.isfinite(y).all()


def test_guidance_sweep_ranks_every_scale_together(dd, unseen_obs):
    """K candidates at each of S scales, from the same K noises, all ranked by the prefix score."""
    obs = unseen_obs[:2, :5]
    assert dd.guidance_scales() == (1.0,) and dd.n_candidates(3, (1.0, 2.5)) == 6  # a run without dit.guidance
    sweep, scores = dd.generate(obs, n_samples=3, select="none", steps=4, seed=2, guidance=(1.0, 2.5))
    assert sweep.num_experts == 12 and scores.shape == (12,)
    for s, scale in enumerate((None, 2.5)):  # expert (n*S + s)*K + k: scale s of environment n
        alone, alone_scores = dd.generate(obs, n_samples=3, select="none", steps=4, seed=2, guidance=scale)
        rows = torch.tensor([(n * 2 + s) * 3 + k for n in range(2) for k in range(3)])
        torch.testing.assert_close(scores[rows], alone_scores)
        x = obs[:, 0].repeat_interleave(3, dim=0)[:, None]
        torch.testing.assert_close(sweep.select(rows)(x), alone(x))
    best, best_scores = dd.generate(obs, n_samples=3, steps=4, seed=2, guidance=(1.0, 2.5))
    torch.testing.assert_close(best_scores, scores.view(2, 6).min(1).values)
    for bad, kind in [(float("nan"), ValueError), (-1.0, ValueError), ("2", TypeError), ((1.0, True), TypeError)]:
        with pytest.raises(kind, match="guidance"):
            dd.generate(obs, n_samples=1, steps=2, guidance=bad)


def test_ensemble_keeps_the_k_samples_of_the_scale_with_the_best_prefix_crps(dd, unseen_obs):
    """select="ensemble": per environment the K samples of one guidance scale, the one whose K-member ensemble has
    the lowest fair CRPS on the observed frames (the scale a sweep of select="none" ranks first by it)."""
    from dynadiff_fast.experts.ensemble import prefix_crps

    obs = unseen_obs[:2, :5]
    sweep, scores = dd.generate(obs, n_samples=3, select="none", steps=4, seed=2, guidance=(1.0, 4.0))
    ens, ens_scores = dd.generate(obs, n_samples=3, select="ensemble", steps=4, seed=2, guidance=(1.0, 4.0))
    assert ens.num_experts == 6 and ens_scores.shape == (6,)
    with torch.no_grad():
        roll = sweep.rollout(obs[:, 0].repeat_interleave(6, dim=0)[:, None], 4)[:, 0]
    pick = prefix_crps(roll.view(2, 2, 3, *obs.shape[1:]), obs).argmin(1)
    rows = torch.tensor([(n * 2 + int(pick[n])) * 3 + k for n in range(2) for k in range(3)])
    torch.testing.assert_close(ens_scores, scores[rows])
    x = obs[:, 0].repeat_interleave(3, dim=0)[:, None]
    torch.testing.assert_close(ens(x), sweep.select(rows)(x))
    plain, plain_scores = dd.generate(obs, n_samples=3, select="none", steps=4, seed=2)  # one scale: all K samples
    torch.testing.assert_close(dd.generate(obs, n_samples=3, select="ensemble", steps=4, seed=2)[1], plain_scores)
    with pytest.raises(ValueError, match="n_samples: select='ensemble' needs K >= 2"):
        dd.generate(obs, n_samples=1, select="ensemble", steps=2)


def test_generated_experts_roll_out_without_autograd(dd, unseen_obs):
    """Generated experts are for inference: a rollout outside no_grad keeps no graph (issue 14: one kept for every
    step of every expert made the per-expert rollout cost grow with the number of experts)."""
    experts, _ = dd.generate(unseen_obs[:2, :3], n_samples=2, select="none", steps=2)
    assert not any(p.requires_grad for p in experts.parameters())
    assert not experts.rollout(unseen_obs[0, :1], 3).requires_grad


def test_scores_are_the_shared_prefix_score(dd, unseen_obs):
    """DynaDiff ranks candidates by the same L-1-step rollout score as the prefix-based baselines."""
    from dynadiff_fast.experts.evaluate import prefix_error

    obs = unseen_obs[:2, :6]
    experts, scores = dd.generate(obs, n_samples=3, select="none", steps=4, seed=5)
    x0 = obs[:, 0].repeat_interleave(3, dim=0)[:, None]  # expert n*3+k starts from its environment's frame 0
    roll = experts.rollout(x0, obs.shape[1] - 1)  # [6, 1, L, C, H, W]
    by_hand = torch.cat([prefix_error(roll[i : i + 1], obs[i // 3 : i // 3 + 1])[0] for i in range(6)])
    torch.testing.assert_close(scores, by_hand)
    # a one-step (teacher-forced) score would differ: the rollout compounds the first step's error
    one_step = experts(obs[:, :-1].repeat_interleave(3, dim=0)) - obs[:, 1:].repeat_interleave(3, dim=0)
    assert not torch.allclose(scores, one_step.square().flatten(1).mean(1))


@pytest.mark.parametrize("L", [1, 2, 8])
def test_any_observation_length(dd, unseen_obs, L):
    if L == 1:  # nothing to score: the first candidate is kept, with a warning
        with pytest.warns(UserWarning, match="L = 1"):
            experts, scores = dd.generate(unseen_obs[:2, :L], n_samples=2, steps=3)
    else:
        experts, scores = dd.generate(unseen_obs[:2, :L], n_samples=2, steps=3)
    assert experts.num_experts == 2
    assert torch.isnan(scores).all() if L == 1 else torch.isfinite(scores).all()


@pytest.mark.parametrize("mode", ["shuffled", "zero"])
def test_prompt_controls(dd, unseen_obs, mode):
    obs = unseen_obs[:, :5]
    real = dd.prompts(dd.check_obs(obs))
    ctrl = dd.prompts(dd.check_obs(obs), mode, seed=0)
    assert ctrl.shape == real.shape and not torch.allclose(ctrl, real)
    if mode == "shuffled":  # a permutation of the batch's prompts, no environment keeps its own
        assert all(any(torch.equal(c, r) for r in real) for c in ctrl)
        assert not any(torch.equal(c, r) for c, r in zip(ctrl, real))
        single = dd.prompts(dd.check_obs(obs[:1]), mode)
        assert any(torch.equal(single[0], r) for r in dd.model.reference_prompts)
    experts, _ = dd.generate(obs, n_samples=1, steps=3, prompt_mode=mode)
    assert experts.num_experts == 3


def test_bad_observations(dd, unseen_obs):
    obs = unseen_obs[0, :4]
    with pytest.raises(ValueError, match="obs: frames of shape"):
        dd.generate(torch.zeros(4, 2, 12, 12))  # channels
    with pytest.raises(ValueError, match="obs: frames of shape"):
        dd.generate(torch.zeros(4, 1, 12, 10))  # grid
    with pytest.raises(TypeError, match="obs: dtype"):
        dd.generate(torch.zeros(4, 1, 12, 12, dtype=torch.int64))
    bad = obs.clone()
    bad[1, 0, 3, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN/inf"):
        dd.generate(bad)
    bad[1, 0, 3, 3] = float("inf")
    with pytest.raises(ValueError, match="NaN/inf"):
        dd.generate(bad)
    with pytest.raises(ValueError, match="L >= 1"):
        dd.generate(obs[:0])
    with pytest.raises(ValueError, match="expected"):
        dd.generate(obs[0, 0])
    with pytest.raises(ValueError, match="select"):
        dd.generate(obs, select="best")
    with pytest.raises(ValueError, match="n_samples"):
        dd.generate(obs, n_samples=0)
    with pytest.raises(ValueError, match="prompt_mode"):
        dd.generate(obs, prompt_mode="random")
    with pytest.raises(ValueError, match="steps"):
        dd.generate(obs, steps=0)


def test_unstandardised_observations_warn_and_diverging_candidates_are_an_error(dd, unseen_obs, monkeypatch):
    """Raw physical frames (here x 1e6) are warned about; an environment whose every candidate diverges (NaN/inf
    prefix score) is an error naming it, and non-finite decoded weights are an error, never a returned expert."""
    obs = unseen_obs[0, :4]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dd.generate(obs, n_samples=2)  # standardised: no warning
    with pytest.warns(UserWarning, match="far outside the standardised scale"):
        dd.generate(obs * 1e6, n_samples=2)
    nan_scores = lambda self, experts, o, n: torch.full((o.shape[0] * n,), float("nan"))  # noqa: E731
    monkeypatch.setattr(type(dd), "score", nan_scores)
    with pytest.raises(ValueError, match=r"every candidate of environment\(s\) \[0\] diverges"):
        dd.generate(obs, n_samples=2)
    monkeypatch.undo()
    decode = dd.graph.decode_stacked
    monkeypatch.setattr(dd.graph, "decode_stacked", lambda t: {k: v * float("inf") for k, v in decode(t).items()})
    with pytest.raises(ValueError, match="decoded weights .* hold NaN/inf"):
        dd.generate(obs, n_samples=2)


def test_broken_run_dirs(pipeline, tmp_path):
    from dynadiff_fast.generative.dynadiff import DynaDiff

    with pytest.raises(FileNotFoundError, match="dynadiff.json"):
        DynaDiff.load(pipeline["root"] / "zoo")
    copy = tmp_path / "run"
    shutil.copytree(pipeline["run"], copy)
    shutil.rmtree(copy / "dit" / "checkpoints")
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        DynaDiff.load(copy)
    shutil.rmtree(copy / "vae")
    with pytest.raises(FileNotFoundError, match="VAE run"):
        DynaDiff.load(copy)
    shutil.copytree(pipeline["run"], tmp_path / "run2")
    manifest = tmp_path / "run2" / "dit" / "dynadiff.json"
    doc = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**doc, "system_name": "kolmogorov"}))
    with pytest.raises(ValueError, match="relax zoo"):
        DynaDiff.load(tmp_path / "run2")


def test_generate_cli_writes_a_neuraloperator_checkpoint(pipeline, dd, tmp_path, capsys):
    from neuralop.models import FNO
    from safetensors.torch import load_file

    from dynadiff_fast import io
    from dynadiff_fast.cli import main

    out = tmp_path / "expert.safetensors"
    args = ["generate", "-q", "--run", str(pipeline["run"]), "--obs", f"{pipeline['data']}:0", "--frames", "4",
            "--out", str(out), "--n-samples", "2", "--steps", "4"]  # fmt: skip
    assert main(args) == 0
    for path in (out, out.with_suffix(".json")):  # the umask mode of a plain open(), not tempfile's 0600
        assert path.stat().st_mode & 0o777 == io.ordinary_mode()
    doc = json.loads(out.with_suffix(".json").read_text())
    model = FNO(**doc["fno_kwargs"])
    model.load_state_dict(load_file(str(out)))
    x = torch.randn(2, 1, 12, 12)
    experts, _ = dd.generate(read_obs(dd, pipeline, 4), n_samples=2, steps=4, seed=0)
    torch.testing.assert_close(model(x), experts(x)[0], rtol=1e-4, atol=1e-5)
    capsys.readouterr()
    for obs, message in [(f"{pipeline['other']}:0", "relax_other"), (str(pipeline["data"]), "FILE.h5:ENV_INDEX"),
                         (f"{pipeline['data']}:99", "environment 99")]:  # fmt: skip
        assert main([*args[:5], obs, *args[6:]]) == 2
        err = capsys.readouterr().err
        assert err.startswith("dynadiff generate: error: obs: ") and message in err and err.count("\n") == 1
    # one frame: nothing to score; the JSON says null (strict JSON has no NaN)
    assert main([*args[:7], "1", *args[8:]]) == 0
    assert json.loads(out.with_suffix(".json").read_text())["prefix_score_mse"] is None
    # a NaN guidance scale is refused; non-finite generated weights (an overflowing scale) are an error; neither
    # writes anything
    nan_out = tmp_path / "nan.safetensors"
    for scale, message in [("nan", "guidance: scales must be finite"), ("1e38", "decoded weights")]:
        assert main([*args[:9], str(nan_out), *args[10:], "--guidance", scale]) == 2
        assert message in capsys.readouterr().err and not nan_out.exists()


def read_obs(dd, pipeline, frames):
    from dynadiff_fast.stages.generate import read_observations

    return read_observations(dd, f"{pipeline['data']}:0", frames)


def test_train_dit_resumes(pipeline):
    from dynadiff_fast.generative.checkpoint import latest_checkpoint
    from dynadiff_fast.stages.train_dit import TrainDiTConfig, train_dit

    run = pipeline["run"]
    cfg = {**pipeline["dit"], "steps": 18}
    train_dit(TrainDiTConfig(zoo=str(pipeline["zoo"]), vae=str(run / "vae"), data=str(pipeline["data"]),
                             out=str(run / "dit"), progress=False, **cfg))  # fmt: skip
    assert latest_checkpoint(run / "dit").name == "step_00000018"
    steps = [json.loads(line)["step"] for line in (run / "dit" / "log.jsonl").read_text().splitlines()]
    assert steps == [6, 12, 18]  # resumed at 12, not restarted
    with pytest.raises(ValueError, match="different"):
        train_dit(TrainDiTConfig(zoo=str(pipeline["zoo"]), vae=str(run / "vae"), data=str(pipeline["data"]),
                                 out=str(run / "dit"), progress=False, **{**cfg, "dit": {"hidden_size": 8}}))  # fmt: skip


def test_train_dit_with_vicinal_mixing_resumes_exactly(pipeline, tmp_path, monkeypatch):
    """Mixed rows (partner draws, prompts of both observations, the VAE encoding of mixed weights): 4 steps in
    one go == killed after the step-2 checkpoint and re-run."""
    from dynadiff_fast.generative import checkpoint
    from dynadiff_fast.generative.dynadiff import DynaDiff
    from dynadiff_fast.stages.train_dit import TrainDiTConfig, train_dit

    run = pipeline["run"]
    cfg = {**pipeline["dit"], "steps": 4, "checkpoint_every": 2, "log_every": 1, "mix_prob": 1.0, "mix_span": 0.5}

    def train(out):
        return train_dit(TrainDiTConfig(zoo=str(pipeline["zoo"]), vae=str(run / "vae"), data=str(pipeline["data"]),
                                        out=str(out), progress=False, **cfg))  # fmt: skip

    train(tmp_path / "a")
    save = checkpoint.save_checkpoint

    def save_then_die(*args, **kwargs):
        save(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path / "b")
    monkeypatch.setattr(checkpoint, "save_checkpoint", save)
    train(tmp_path / "b")
    a, b = (DynaDiff.load(tmp_path / r).model.state_dict() for r in "ab")
    for key in a:
        torch.testing.assert_close(a[key], b[key], msg=lambda m, k=key: f"{k}: {m}")
    cfg["mix_prob"] = 0.0  # the same 4 steps without mixing train another model
    train(tmp_path / "c")
    plain = DynaDiff.load(tmp_path / "c").model.state_dict()
    assert not torch.allclose(plain["dit.final.linear.weight"], a["dit.final.linear.weight"])


def test_observation_pool_windows_and_memory_cap(pipeline):
    from dynadiff_fast.data import EnvDataset
    from dynadiff_fast.stages.train_dit import ObservationPool

    with EnvDataset.open(pipeline["data"]) as ds:
        envs = ds.split["seen"].tolist()
        pool = ObservationPool(ds, envs)
        assert pool.data.shape == (6, 4, 9, 1, 12, 12)
        torch.testing.assert_close(pool.data[2], ds.train(envs[2])[0])
        g = torch.Generator().manual_seed(0)
        rows = torch.tensor([0, 5, 3, 3])
        obs, lengths = pool.sample(rows, 5, g)
        assert obs.shape == (4, 5, 1, 12, 12) and ((lengths >= 1) & (lengths <= 5)).all()
        for b, r in enumerate(rows.tolist()):  # each window is a contiguous run of one trajectory of its env
            l = int(lengths[b])
            hits = [(t, s) for t in range(4) for s in range(9 - l + 1)
                    if torch.equal(pool.data[r, t, s : s + l], obs[b, :l])]  # fmt: skip
            assert hits
        capped = ObservationPool(ds, envs, pool_gb=6 * 2 * 9 * 4 * 144 / 2**30)  # room for 2 of 4 trajectories
        assert capped.data.shape[:3] == (6, 2, 9)
