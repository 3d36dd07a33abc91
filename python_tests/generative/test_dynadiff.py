"""DynaDiff model + generation: a toy conditional latent distribution learned end to end (prompter + DiT
from observations), controls (shuffled / zero prompt) worse than real prompts, classifier-free guidance path.

Toy family: environment parameter ``a``; observations ``x_t = a + u0 * exp(-0.3 a t)`` (u0 a random field);
latent ``z(a) = W1 a + W2 (a^2 - 1.5)`` (+ small noise per "expert"). The prompter must read ``a`` from the
frames and the DiT must map the prompt to ``z(a)``: for held-out ``a`` the generated latents must be far closer
to the truth than the zoo-mean latent (the best an unconditional model can do in mean squared error).
"""

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
