"""Prompter: explicit prompt vs NumPy (App. G.1), spectral truncation, any observation length, shapes, errors."""

import numpy as np
import pytest
import torch

from dynadiff_fast.generative.prompter import (
    Prompter,
    PrompterConfig,
    channel_operator,
    explicit_features,
    frame_statistics,
    low_modes,
    spectral_features,
    transfer_features,
)


def explicit_numpy(obs: np.ndarray) -> np.ndarray:
    """App. G.1 written directly: obs [L, C, H, W] -> 8 numbers."""
    L = obs.shape[0]
    S = np.zeros((4, L))
    for i, x in enumerate(obs.astype(np.float64)):
        for c in range(x.shape[0]):
            f = x[c]
            gy, gx = np.gradient(f)
            S[0, i] += f.mean()
            S[1, i] += ((f - f.mean()) ** 2).mean()
            S[2, i] += (f**2).sum()
            S[3, i] += (gy**2 + gx**2).sum()
    return np.array([[S[k].mean(), (S[k, -1] - S[k, 0]) / L] for k in range(4)]).ravel()


@pytest.mark.parametrize("shape", [(1, 1, 5, 7), (4, 3, 8, 8), (10, 2, 9, 6)])
def test_explicit_matches_numpy(rng, shape):
    obs = torch.randn(shape, generator=rng, dtype=torch.float64) * 2 + 0.5
    got = explicit_features(obs[None]).squeeze(0).numpy()
    np.testing.assert_allclose(got, explicit_numpy(obs.numpy()), rtol=1e-10, atol=1e-10)


def test_explicit_with_lengths_uses_only_the_prefix(rng):
    obs = torch.randn(3, 6, 2, 8, 8, generator=rng, dtype=torch.float64)
    lengths = torch.tensor([1, 4, 6])
    got = explicit_features(obs, lengths)
    for n, l in enumerate(lengths.tolist()):
        np.testing.assert_allclose(got[n].numpy(), explicit_numpy(obs[n, :l].numpy()), rtol=1e-10, atol=1e-10)


def test_frame_statistics_ode_frames():
    x = torch.tensor([[1.0, 2.0], [3.0, -1.0]])  # two frames of an ODE state [C=2]
    s = frame_statistics(x, n_spatial=0)
    torch.testing.assert_close(s, torch.tensor([[3.0, 0.0, 5.0, 0.0], [2.0, 0.0, 10.0, 0.0]]))


def test_spectral_truncation_keeps_low_modes(rng):
    x = torch.randn(3, 16, 16, generator=rng)
    full = torch.fft.rfft2(x, norm="forward")
    got = spectral_features(x, modes=4).view(3, 8, 4, 2)
    want = torch.cat([full[:, :4, :4], full[:, -4:, :4]], dim=1)
    torch.testing.assert_close(torch.complex(got[..., 0], got[..., 1]), want)
    assert spectral_features(x, modes=0).numel() == full.numel() * 2


def test_transfer_features_recover_a_fourier_multiplier(rng):
    # Mode-wise linear dynamics s_{t+1} = m * s_t: the transfer ratio is m itself, whatever the initial state.
    x0 = torch.randn(2, 1, 8, 8, generator=rng, dtype=torch.float64)
    m = torch.polar(
        torch.rand(8, 5, generator=rng, dtype=torch.float64), torch.rand(8, 5, generator=rng, dtype=torch.float64)
    )
    s = [torch.fft.rfft2(x0)]
    for _ in range(3):
        s.append(s[-1] * m)
    obs = torch.stack([torch.fft.irfft2(z, s=(8, 8)) for z in s], dim=1)  # [2, 4, 1, 8, 8]
    r = transfer_features(obs, rel_eps=0.0).view(2, 4, 1, 8, 5, 2)
    r = torch.complex(r[..., 0], r[..., 1])
    assert r[:, 0].abs().max() == 0  # no previous frame
    keep = low_modes(obs).abs()[:, :-1] > 1e-3  # the 1e-12 floor of the denominator is negligible there
    keep[..., 0] = keep[..., -1] = False  # columns 0 and Nyquist: a real field forces Hermitian symmetry there
    got = r[:, 1:][keep]
    want = m.expand_as(r[:, 1:])[keep]
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-8)


def make_prompter(frame_shape=(2, 8, 8), n_params=3, hidden=16, modes=3, transfer=True):
    torch.manual_seed(0)
    return Prompter(PrompterConfig(gru_hidden=hidden, spectral_modes=modes, transfer=transfer), frame_shape, n_params)


@pytest.mark.parametrize("transfer", [True, False])
@pytest.mark.parametrize("L", [1, 2, 7, 10])
def test_any_length_and_shapes(rng, L, transfer):
    p = make_prompter(transfer=transfer)
    n_spec = 2 * 2 * 6 * 3  # 2 channels x (2 x 3) x 3 modes, real + imaginary
    assert p.gru.input_size == (2 if transfer else 1) * n_spec
    obs = torch.randn(4, L, 2, 8, 8, generator=rng)
    out = p(obs)
    assert out.shape == (4, p.prompt_dim) == (4, 8 + 16)
    assert torch.isfinite(out).all()
    assert p.aux(out).shape == (4, 3)


@pytest.mark.parametrize("transfer", [True, False])
def test_padded_batch_equals_unpadded_rows(rng, transfer):
    p = make_prompter(transfer=transfer)
    obs = torch.randn(3, 7, 2, 8, 8, generator=rng)
    lengths = torch.tensor([2, 7, 5])
    batched = p(obs, lengths)
    for n, l in enumerate(lengths.tolist()):
        torch.testing.assert_close(batched[n], p(obs[n : n + 1, :l])[0], rtol=1e-5, atol=1e-6)


def test_fit_normalization_standardises_explicit(rng):
    p = make_prompter()
    obs = torch.randn(64, 5, 2, 8, 8, generator=rng) * torch.rand(64, 1, 1, 1, 1, generator=rng) * 3
    p.fit_normalization(obs)
    ex = p(obs)[:, :8]
    torch.testing.assert_close(ex.mean(0), torch.zeros(8), atol=1e-4, rtol=0)
    torch.testing.assert_close(ex.std(0, unbiased=False), torch.ones(8), atol=1e-4, rtol=0)
    # Stored in the state dict, so a reloaded prompter gives the same prompt.
    q = make_prompter()
    q.load_state_dict(p.state_dict())
    torch.testing.assert_close(q(obs[:3]), p(obs[:3]))


def test_gradients_reach_gru_and_head(rng):
    p = make_prompter()
    loss = p.aux(p(torch.randn(2, 3, 2, 8, 8, generator=rng))).square().sum()
    loss.backward()
    assert p.gru.weight_ih_l0.grad.abs().sum() > 0 and p.aux_head.weight.grad.abs().sum() > 0


def test_ode_frames(rng):
    p = make_prompter(frame_shape=(2,), modes=0)
    assert p(torch.randn(3, 4, 2, generator=rng)).shape == (3, p.prompt_dim)


def test_bad_input():
    p = make_prompter()
    with pytest.raises(ValueError, match="obs"):
        p(torch.randn(2, 3, 3, 8, 8))  # wrong channels
    with pytest.raises(ValueError, match="obs"):
        p(torch.randn(2, 3, 2, 8, 9))  # wrong grid
    with pytest.raises(ValueError, match="L >= 1"):
        p(torch.randn(2, 0, 2, 8, 8))
    with pytest.raises(ValueError, match="lengths"):
        p(torch.randn(2, 3, 2, 8, 8), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="lengths"):
        p(torch.randn(2, 3, 2, 8, 8), torch.tensor([1, 4]))


def _linear_sequence(M: torch.Tensor, x0: torch.Tensor, L: int) -> torch.Tensor:
    """Frames x_t = M x_{t-1} (channel mixing at every grid point): ``[L, C, H, W]``."""
    frames = [x0]
    for _ in range(L - 1):
        frames.append(torch.einsum("cd,dhw->chw", M, frames[-1]))
    return torch.stack(frames)


def test_channel_operator_recovers_the_step_and_ignores_the_initial_state(rng):
    theta = 0.3  # a rotation of (u, v) with decay, as Lambda-Omega's uniform states do
    M = 0.95 * torch.tensor([[np.cos(theta), np.sin(theta)], [-np.sin(theta), np.cos(theta)]], dtype=torch.float64)
    a = _linear_sequence(M, torch.randn(2, 8, 8, generator=rng, dtype=torch.float64), 6)
    b = _linear_sequence(M, 3 * torch.randn(2, 8, 8, generator=rng, dtype=torch.float64), 6)
    got = channel_operator(torch.stack([a, b]), modes=3, rel_eps=1e-9).view(2, 2, 2, 2)  # [N, C, C, re/im]
    for n in range(2):
        torch.testing.assert_close(got[n, ..., 0], M, atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(got[n, ..., 1], torch.zeros_like(M), atol=1e-6, rtol=0)


def test_channel_operator_lengths_and_one_frame(rng):
    M = torch.tensor([[0.9, 0.2], [-0.1, 1.1]], dtype=torch.float64)
    seq = _linear_sequence(M, torch.randn(2, 6, 6, generator=rng, dtype=torch.float64), 5)
    noisy = seq.clone()
    noisy[3:] = torch.randn(2, 2, 6, 6, generator=rng, dtype=torch.float64)  # frames past the length
    lengths = torch.tensor([3, 1])
    got = channel_operator(torch.stack([noisy, noisy]), lengths, rel_eps=1e-9)
    torch.testing.assert_close(got[0].view(2, 2, 2)[..., 0], M, atol=1e-6, rtol=1e-6)
    assert torch.equal(got[1], torch.zeros_like(got[1]))  # one frame: no pair, no operator


def test_operator_prompt_size_and_spectra_switch(rng):
    obs = torch.randn(3, 4, 2, 8, 8, generator=rng)
    with_op = Prompter(PrompterConfig(gru_hidden=5, spectral_modes=3, operator=True, spectra=False), (2, 8, 8), 1)
    plain = Prompter(PrompterConfig(gru_hidden=5, spectral_modes=3), (2, 8, 8), 1)
    assert with_op.prompt_dim == 8 + 2 * 2**2 + 5 and with_op(obs).shape == (3, with_op.prompt_dim)
    assert with_op.gru_inputs(obs).shape[-1] == plain.gru_inputs(obs).shape[-1] // 2  # transfer ratios only
    with pytest.raises(ValueError, match="no input"):
        PrompterConfig(spectra=False, transfer=False)


def test_statistics_switch_leaves_the_channel_operator_alone(rng):
    """statistics=False drops the App. G.1 frame statistics: the explicit part is then exactly the operator M."""
    obs = torch.randn(3, 4, 2, 8, 8, generator=rng)
    cfg = dict(gru_hidden=5, spectral_modes=3, operator=True, spectra=False)
    both = Prompter(PrompterConfig(**cfg), (2, 8, 8), 1)
    op_only = Prompter(PrompterConfig(**cfg, statistics=False), (2, 8, 8), 1)
    lengths = torch.full((3,), 4)
    assert op_only.prompt_dim == both.prompt_dim - 8 and op_only(obs).shape == (3, op_only.prompt_dim)
    torch.testing.assert_close(op_only.explicit_raw(obs, lengths), both.explicit_raw(obs, lengths)[:, 8:])
    with pytest.raises(ValueError, match="explicit part would be empty"):
        PrompterConfig(statistics=False)
