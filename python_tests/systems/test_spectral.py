"""Pseudo-spectral machinery: 2/3 dealiasing, Poisson solve and advection term, random fields."""

import math

import pytest
import torch

from dynadiff_fast.ops.ns_stage import ns_advection, velocity_spectra
from dynadiff_fast.systems import spectral


def _band_limited(n, N, K, gen):
    """Random real fields [n, N, N] whose modes all satisfy |k| <= K."""
    g = spectral.SpectralGrid.build((N, N), (2 * math.pi, 2 * math.pi))
    m = torch.fft.fftfreq(N, 1 / N).abs()
    keep = (m[:, None] <= K) & (m[: N // 2 + 1][None, :] <= K)
    c = torch.randn(n, N, N // 2 + 1, dtype=torch.complex128, generator=gen) * keep
    return torch.fft.irfft2(c, s=g.shape), g


def _kept(c, N, K):
    """The modes |k| <= K of an rfft2 spectrum of any size, as [n, 2K+1, K+1] (ky = 0..K, -K..-1)."""
    return torch.cat([c[:, : K + 1, : K + 1], c[:, c.shape[1] - K :, : K + 1]], dim=1)


def _exact_product(a, b, N, K, band):
    """Modes |k| <= K of a*b computed alias-free (fields band-limited to ``band``, interpolated to 2N)."""

    def fine(x):
        c = torch.fft.rfft2(x)
        big = torch.zeros(x.shape[0], 2 * N, N + 1, dtype=c.dtype)
        big[:, : band + 1, : band + 1] = c[:, : band + 1, : band + 1]
        big[:, 2 * N - band :, : band + 1] = c[:, N - band :, : band + 1]
        return torch.fft.irfft2(big, s=(2 * N, 2 * N)) * 4

    return _kept(torch.fft.rfft2(fine(a) * fine(b)) / 4, 2 * N, K)


@pytest.mark.parametrize("N", [12, 16, 32, 33])
def test_two_thirds_rule_removes_every_alias(N, rng):
    """Products of dealiased fields, computed on the N grid and masked, equal the exact product's kept
    modes; with one more mode kept the aliases would land in the kept band (the rule is tight)."""
    K = spectral.dealias_cutoff(N)
    assert 3 * K < N <= 3 * (K + 1)
    a, g = _band_limited(2, N, K, rng)
    b, _ = _band_limited(2, N, K, rng)
    got = torch.fft.rfft2(a * b) * g.mask
    torch.testing.assert_close(_kept(got, N, K), _exact_product(a, b, N, K, K), rtol=0, atol=1e-10)
    # Everything outside |k| <= K is removed.
    my, mx = torch.fft.fftfreq(N, 1 / N).abs(), torch.fft.rfftfreq(N, 1 / N)
    assert torch.equal(g.mask.bool(), (my[:, None] <= K) & (mx[None, :] <= K))
    # Keeping K + 1 would not do: products of such fields alias into the band |k| <= K + 1.
    a2, _ = _band_limited(1, N, K + 1, rng)
    err = _kept(torch.fft.rfft2(a2 * a2), N, K + 1) - _exact_product(a2, a2, N, K + 1, K + 1)
    assert err.abs().max() > 1e-6


def test_advection_term_matches_analytic():
    """w = sin x + cos 2y on [0, 2pi)^2: psi = sin x + cos(2y)/4, u.grad w = 1.5 cos x sin 2y."""
    N = 16
    g = spectral.SpectralGrid.build((N, N), (2 * math.pi, 2 * math.pi), torch.float64)
    x = torch.arange(N, dtype=torch.float64) * 2 * math.pi / N
    Y, X = torch.meshgrid(x, x, indexing="ij")
    w = (torch.sin(X) + torch.cos(2 * Y))[None, None]
    spec = velocity_spectra(torch.fft.rfft2(w), g.kx[0], g.ky[:, 0])
    u, v, wx, wy = torch.fft.irfft2(spec, s=(N, N))[0]
    torch.testing.assert_close(u, -torch.sin(2 * Y) / 2)
    torch.testing.assert_close(v, -torch.cos(X))
    torch.testing.assert_close(wx, torch.cos(X))
    torch.testing.assert_close(wy, -2 * torch.sin(2 * Y))
    q = ns_advection(torch.stack([u, v, wx, wy])[None])
    torch.testing.assert_close(q[0, 0], -1.5 * torch.cos(X) * torch.sin(2 * Y))


def test_velocity_from_vorticity_matches_op():
    g = spectral.SpectralGrid.build((8, 12), (1.0, 2.0), torch.float64)
    w = torch.fft.rfft2(torch.randn(3, 1, 8, 12, dtype=torch.float64))
    u, v = spectral.velocity_from_vorticity(w, g)
    spec = velocity_spectra(w, g.kx[0], g.ky[:, 0])
    torch.testing.assert_close(u, spec[:, :1])
    torch.testing.assert_close(v, spec[:, 1:2])


def test_gaussian_random_field_seeded_spectrum():
    g = spectral.SpectralGrid.build((16, 16), (1.0, 1.0))
    gen = lambda s: torch.Generator().manual_seed(s)  # noqa: E731
    a = spectral.gaussian_random_field(400, g, 2.5, 7.0, generator=gen(0))
    assert a.shape == (400, 1, 16, 16)
    torch.testing.assert_close(a, spectral.gaussian_random_field(400, g, 2.5, 7.0, generator=gen(0)))
    assert not torch.allclose(a, spectral.gaussian_random_field(400, g, 2.5, 7.0, generator=gen(1)))
    assert a.mean(dim=(-2, -1)).abs().max() < 1e-12
    # E|c_k|^2 = 2 sigma^2 (|k|^2 + tau^2)^-alpha: compare two modes' empirical power ratio.
    c = torch.fft.rfft2(a[:, 0]) / 256
    p = c.abs().square().mean(0)
    k2 = g.k2.double()
    want = float((k2[0, 1] + 49) / (k2[0, 4] + 49)) ** 2.5
    assert abs(float(p[0, 4] / p[0, 1]) / want - 1) < 0.25  # 400 samples x 2 modes each: ~10 % noise
    assert float(p[0, 1]) == pytest.approx(2 * 7.0**3 * float(k2[0, 1] + 49) ** -2.5, rel=0.25)
    # Nothing above the 2/3 cutoff.
    assert (c.abs() * (1 - g.mask.double())).max() < 1e-12


def test_choose_substeps_and_settings_errors():
    with pytest.raises(ValueError, match="dtype"):
        spectral.dtype_of("float16")
    with pytest.raises(ValueError, match="backend"):
        spectral.check_backend("jax")
