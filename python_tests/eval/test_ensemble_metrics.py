"""Ensemble metrics (fair CRPS, spread-skill, rank histogram, PIT coverage): each fast op against its plain
reference, and each against what it must read on ensembles of known calibration (scipy.stats)."""

import math

import numpy as np
import pytest
import torch
from scipy import stats

from dynadiff_fast.metrics import (
    crps_ensemble,
    crps_ensemble_reference,
    ensemble_spread_error,
    pit_coverage,
    pit_coverage_reference,
    rank_histogram,
    rank_histogram_reference,
    spread_skill,
)


def _ensemble(rng, m: int, n: int, spread: float = 1.0, bias: float = 0.0):
    """Members ``[m, n]`` and observations ``[n]``: per point a centre mu; members mu + spread * eta,
    the observation mu + bias + eps (eta, eps standard normal). spread = 1, bias = 0: calibrated."""
    mu = 3 * torch.randn(n, generator=rng, dtype=torch.float64)
    members = mu + spread * torch.randn(m, n, generator=rng, dtype=torch.float64)
    obs = mu + bias + torch.randn(n, generator=rng, dtype=torch.float64)
    return members, obs


@pytest.mark.parametrize("m", [2, 3, 8, 33])
def test_crps_matches_the_pairwise_reference(rng, m):
    ens = torch.randn(4, m, 5, 7, generator=rng)
    obs = torch.randn(4, 5, 7, generator=rng)
    got = crps_ensemble(ens, obs, dim=1)
    assert got.shape == (4, 5, 7) and got.dtype == torch.float32
    torch.testing.assert_close(got, crps_ensemble_reference(ens, obs, dim=1), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(crps_ensemble(ens.movedim(1, -1), obs, dim=-1), got)


def test_crps_of_identical_members_is_the_absolute_error(rng):
    obs = torch.randn(6, generator=rng)
    ens = torch.full((5, 6), 0.5)
    torch.testing.assert_close(crps_ensemble(ens, obs), (0.5 - obs).abs())


def test_fair_crps_is_unbiased_for_the_distribution_the_members_come_from(rng):
    # members and observation from N(mu, 1): the expected CRPS is that of N(mu, 1) at y (closed form), for any M
    m, n = 4, 200_000
    centre = 3 * torch.randn(n, generator=rng, dtype=torch.float64)
    members = centre + torch.randn(m, n, generator=rng, dtype=torch.float64)
    obs = centre + torch.randn(n, generator=rng, dtype=torch.float64)
    z = (obs - centre).numpy()
    closed = z * (2 * stats.norm.cdf(z) - 1) + 2 * stats.norm.pdf(z) - 1 / math.sqrt(math.pi)
    fair = crps_ensemble(members, obs).double().numpy()
    diff = fair - closed
    assert abs(diff.mean()) < 4 * diff.std() / math.sqrt(n)
    # the plain empirical-CDF estimator is biased high by E|x - x'| / (2M) = 1 / (M sqrt(pi)): far outside
    plain = (members - obs).abs().mean(0) - (members[:, None] - members[None]).abs().sum((0, 1)) / (2 * m * m)
    assert plain.mean().item() - closed.mean() > 0.5 / (m * math.sqrt(math.pi))


def test_spread_skill_against_numpy_and_calibration(rng):
    m, n = 5, 100_000
    members, obs = _ensemble(rng, m, n)
    s2, e2 = ensemble_spread_error(members.reshape(m, 10, -1), obs.reshape(10, -1), frame_dims=1)
    x = members.numpy()
    np.testing.assert_allclose(s2.numpy(), x.var(0, ddof=1).reshape(10, -1).mean(-1), rtol=1e-10)
    np.testing.assert_allclose(e2.numpy(), ((x.mean(0) - obs.numpy()) ** 2).reshape(10, -1).mean(-1), rtol=1e-10)
    assert spread_skill(s2, e2, m).item() == pytest.approx(1.0, abs=0.02)
    # members at half the spread: spread^2 = 1/4, error^2 = 1 + 1/(4M)
    s2, e2 = ensemble_spread_error(*_ensemble(rng, m, n, spread=0.5), frame_dims=1)
    want = math.sqrt((m + 1) / m * 0.25 / (1 + 0.25 / m))
    assert spread_skill(s2, e2, m).item() == pytest.approx(want, abs=0.02)
    per_frame = spread_skill(s2[None].expand(3, -1), e2[None].expand(3, -1), m, dim=1)
    assert per_frame.shape == (3,)


@pytest.mark.parametrize("m", [1, 4, 9])
def test_rank_histogram_and_coverage_match_the_reference(rng, m):
    ens = torch.randn(m, 3, 40, generator=rng)
    obs = torch.randn(3, 40, generator=rng)
    ens[:, 0, :5] = 0.25  # ties: members equal to each other and to the observation
    obs[0, :5] = 0.25
    ens[: (m + 1) // 2, 1, :5] = obs[1, :5]  # some members tie with the observation
    hist = rank_histogram(ens, obs)
    torch.testing.assert_close(hist, rank_histogram_reference(ens, obs), rtol=1e-12, atol=1e-12)
    assert hist.shape == (m + 1,) and hist.sum().item() == pytest.approx(1.0)
    for level in (0.5, 0.9):
        got = pit_coverage(ens, obs, level)
        torch.testing.assert_close(got, pit_coverage_reference(ens, obs, level), rtol=1e-6, atol=1e-6)


def test_calibrated_ensemble_has_flat_ranks_and_nominal_coverage(rng):
    m, n = 7, 100_000
    members, obs = _ensemble(rng, m, n)
    hist = rank_histogram(members, obs)
    assert stats.chisquare(hist.numpy() * n).pvalue > 1e-3
    for level in (0.5, 0.9):
        cov = pit_coverage(members, obs, level).double()
        assert abs(cov.mean().item() - level) < 4 * cov.std().item() / math.sqrt(n)


def test_under_dispersed_or_biased_ensembles_are_caught(rng):
    m, n = 7, 50_000
    narrow = rank_histogram(*_ensemble(rng, m, n, spread=0.4))
    assert narrow[0] > 2 / (m + 1) and narrow[-1] > 2 / (m + 1) and narrow[m // 2] < 0.5 / (m + 1)  # U shape
    assert pit_coverage(*_ensemble(rng, m, n, spread=0.4), 0.9).mean() < 0.8  # nominal 0.9
    biased = rank_histogram(*_ensemble(rng, m, n, bias=1.5))
    assert biased[-1] > 3 / (m + 1)  # the observation above every member
    assert pit_coverage(*_ensemble(rng, m, n, spread=3.0), 0.5).mean() > 0.7  # too wide: nominal 0.5


def test_bad_inputs():
    with pytest.raises(ValueError, match="at least 2 members"):
        crps_ensemble(torch.zeros(1, 4), torch.zeros(4))
    with pytest.raises(ValueError, match="obs: shape"):
        crps_ensemble(torch.zeros(3, 4), torch.zeros(5))
    with pytest.raises(ValueError, match="dim: expected"):
        rank_histogram(torch.zeros(3, 4), torch.zeros(4), dim=2)
    with pytest.raises(ValueError, match="level: expected"):
        pit_coverage(torch.zeros(3, 4), torch.zeros(4), 1.0)
    with pytest.raises(ValueError, match="members: expected"):
        spread_skill(torch.ones(3), torch.ones(3), 1)
    with pytest.raises(TypeError, match="ens"):
        crps_ensemble(np.zeros((3, 4)), torch.zeros(4))
