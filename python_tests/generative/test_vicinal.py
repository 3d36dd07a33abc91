"""Vicinal training (``generative.vicinal``): neighbour tables, partner sampling, and the claim the mixing rests
on, that mixing normalised weight-graph tokens mixes the experts' weights."""

import pytest
import torch

from dynadiff_fast.experts.configs import ExpertConfig
from dynadiff_fast.generative import vicinal
from dynadiff_fast.weightspace.graph import NodeTokens, WeightGraph
from dynadiff_fast.weightspace.normalization import WeightNormalizer

SMALL = ExpertConfig(in_channels=1, out_channels=1, hidden_channels=4, n_modes=(3, 3), n_layers=2)


def test_neighbours_are_the_nearest_other_environments():
    params = torch.tensor([[0.0], [1.0], [2.0], [5.0]])
    nb = vicinal.environment_neighbours(params, 2)
    assert nb.tolist() == [[1, 2], [0, 2], [1, 0], [2, 1]]
    # two parameters: distances in units of each parameter's std (the second spans 100x the first)
    grid = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 100.0], [1.0, 100.0]])
    assert sorted(vicinal.environment_neighbours(grid, 2)[0].tolist()) == [1, 2]


@pytest.mark.parametrize("span", [0.0, 0.5])
def test_partners_come_from_neighbouring_environments(span):
    env_of = torch.tensor([0, 0, 1, 1, 1, 2, 3, 3])  # uneven experts per environment
    params = torch.tensor([[0.0], [1.0], [2.0], [5.0]])
    pairs = vicinal.VicinalPairs(env_of, params, prob=1.0, span=span)
    g = torch.Generator().manual_seed(0)
    idx = torch.randint(len(env_of), (4000,), generator=g)
    partner, lam = pairs.sample(idx, g)
    nb = vicinal.environment_neighbours(params, 2)
    assert all(int(env_of[p]) in nb[int(env_of[i])].tolist() for i, p in zip(idx, partner))
    # every expert of every environment that is someone's neighbour is drawn (env 3 is nobody's)
    assert set(partner.tolist()) == set(range(6))
    assert lam.min() >= -span and lam.max() <= 1 + span
    assert (lam < 0).any() == (span > 0) and (lam > 1).any() == (span > 0)
    off = vicinal.VicinalPairs(env_of, params, prob=0.0, span=span).sample(idx, g)
    assert torch.equal(off[0], idx) and (off[1] == 1).all()


def test_mix_is_exact_for_unmixed_rows():
    a, b = torch.randn(3, 5), torch.randn(3, 5)
    out = vicinal.mix(a, b, torch.tensor([1.0, 0.25, -0.5]))
    assert torch.equal(out[0], a[0])
    torch.testing.assert_close(out[1], 0.25 * a[1] + 0.75 * b[1])
    torch.testing.assert_close(out[2], -0.5 * a[2] + 1.5 * b[2])


def test_mixing_normalised_tokens_mixes_the_weights():
    """Tokens and their per-element normalisation are affine in the weights: mixing in token space, then
    decoding, gives the mixed weights (the VAE and DiT mix tokens; CCM's merges are weight mixes)."""
    graph = WeightGraph.from_config(SMALL)
    torch.manual_seed(0)
    experts = [SMALL.build() for _ in range(4)]
    tokens = graph.encode(experts)
    norm = WeightNormalizer.fit(tokens)
    values = norm.normalize(tokens).packed()[0]
    lam = torch.tensor([0.3, -0.5])
    mixed = vicinal.mix(values[:2], values[2:], lam)
    weights = graph.decode_stacked(norm.denormalize(NodeTokens.from_packed(mixed, graph)))
    stacked = {k: torch.stack([dict(e.state_dict())[k] for e in experts]) for k in weights}
    for key, w in weights.items():
        expect = vicinal.mix(stacked[key][:2], stacked[key][2:], lam)
        torch.testing.assert_close(w, expect, rtol=1e-5, atol=1e-5, msg=lambda m, k=key: f"{k}: {m}")


def test_settings_are_checked():
    with pytest.raises(ValueError, match="mix_prob"):
        vicinal.check(1.5, 0.0)
    with pytest.raises(ValueError, match="mix_span"):
        vicinal.check(0.5, -0.1)
    assert vicinal.zoo_vicinity(type("Z", (), {"env_index": torch.tensor([3, 3]), "params": None})(), 0.5, 0) is None
