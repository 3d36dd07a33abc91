"""WeightNormalizer: zero mean / unit std per element and per (in, out) pair over a synthetic zoo, exact
inverse, streaming fit == one-shot fit, std floor, storage, bad input."""

import warnings

import pytest
import torch

from dynadiff_fast.weightspace.graph import NodeTokens, WeightGraph
from dynadiff_fast.weightspace.normalization import WeightNormalizer

pytest.importorskip("neuralop")
from neuralop.models import FNO  # noqa: E402

warnings.filterwarnings("ignore", category=UserWarning, module="neuralop")
CFG = dict(n_modes=(6, 6), in_channels=2, out_channels=2, hidden_channels=6, n_layers=2)


@pytest.fixture(scope="module")
def graph():
    torch.manual_seed(0)
    return WeightGraph.from_module(FNO(**CFG))


def synthetic_zoo(graph, n_experts, seed=0):
    """A finetuned-zoo-like token set: a shared base plus per-coordinate spreads spanning 4 decades."""
    gen = torch.Generator().manual_seed(seed)
    groups = []
    for g in graph.groups:
        shape = (g.n_nodes, g.feature_length)
        base = torch.randn(shape, generator=gen)
        spread = 10 ** (-4 * torch.rand(shape, generator=gen))
        groups.append(base + spread * torch.randn((n_experts, *shape), generator=gen))
    return NodeTokens(groups, graph)


def assert_standardized(samples, mean, std):
    """``samples [..., n]`` have zero mean and unit (population) std over the last axis. The float32
    mean is off by up to half an ulp, a shift of ``ulp(mean) / (2 std)`` in z (<= ~1e-3 for the 4-decade
    spreads here); nothing else may move the mean."""
    shift = torch.finfo(torch.float32).eps * (mean.abs() / std).amax(-1)
    assert (samples.mean(-1).abs() <= 1e-6 + shift).all()
    torch.testing.assert_close(
        samples.std(-1, unbiased=False), torch.ones(samples.shape[:-1], dtype=samples.dtype), rtol=0, atol=1e-4
    )


def test_element_statistics_are_zero_mean_unit_std(graph):
    zoo = synthetic_zoo(graph, 64)
    norm = WeightNormalizer.fit(zoo, rel_std_floor=0.0)
    for t, mean, std in zip(norm.normalize(zoo).groups, norm.mean, norm.std):
        assert_standardized(t.double().movedim(0, -1), mean[..., None], std[..., None])


def test_pair_statistics_are_zero_mean_unit_std(graph):
    zoo = synthetic_zoo(graph, 48)
    norm = WeightNormalizer.fit(zoo, granularity="pair", rel_std_floor=0.0)
    for g, t, mean, std in zip(graph.groups, norm.normalize(zoo).groups, norm.mean, norm.std):
        for seg in g.segments:
            sl = slice(seg.offset, seg.offset + seg.length)
            blocks = (g.n_nodes, seg.n_in, seg.per_in)  # pool each (out, in) pair over experts and its entries
            samples = t[..., sl].double().reshape(-1, *blocks).movedim(0, -1).reshape(*blocks[:2], -1)
            assert_standardized(samples, mean[:, sl].reshape(blocks), std[:, sl].reshape(blocks))
            # Pair statistics are shared by the pair's entries.
            assert (std[:, sl].reshape(blocks) == std[:, sl].reshape(blocks)[..., :1]).all()


@pytest.mark.parametrize("granularity", ["element", "pair"])
def test_round_trip_and_streaming_fit(graph, granularity):
    zoo = synthetic_zoo(graph, 40, seed=1)
    norm = WeightNormalizer.fit(zoo, granularity=granularity)
    chunks = [zoo.select(slice(0, 7)), zoo.select(slice(7, 8)), zoo.select(slice(8, 40))]
    streamed = WeightNormalizer.fit(iter(chunks), granularity=granularity)
    for a, b in zip(norm.mean + norm.std, streamed.mean + streamed.std):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)

    back = norm.denormalize(norm.normalize(zoo))
    for a, b in zip(back.groups, zoo.groups):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    # Decoding the round-tripped tokens gives the zoo's weights back.
    for sd_a, sd_b in zip(graph.decode(back), graph.decode(zoo)):
        for k in sd_a:
            torch.testing.assert_close(sd_a[k], sd_b[k], rtol=1e-6, atol=1e-6)


def test_std_floor_keeps_constant_coordinates_bounded(graph):
    zoo = synthetic_zoo(graph, 16, seed=2)
    gi = graph.names.index("fno_blocks.convs.0")
    frozen = zoo.groups[gi]
    frozen[:, :, :10] = frozen[0, :, :10]  # no gradient ever reached these: identical across the zoo
    frozen[:, :, :10] += 1e-7 * torch.randn_like(frozen[:, :, :10])  # ...up to float noise
    norm = WeightNormalizer.fit(zoo)
    z = norm.normalize(zoo).groups[gi]
    assert torch.isfinite(z).all()
    assert z[:, :, :10].abs().max() < 1e-2  # noise stays noise instead of becoming unit-scale
    spec = graph.groups[gi].segments[0]
    floor = 1e-2 * norm.std[gi][:, spec.offset : spec.offset + spec.length].median()
    assert (norm.std[gi][:, :10] >= floor * (1 - 1e-6)).all()
    back = norm.denormalize(norm.normalize(zoo)).groups[gi]
    torch.testing.assert_close(back, zoo.groups[gi], rtol=1e-6, atol=1e-6)


def test_state_dict_round_trip_and_gradients(graph):
    zoo = synthetic_zoo(graph, 8, seed=3)
    norm = WeightNormalizer.fit(zoo)
    state = norm.state_dict()
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    loaded = WeightNormalizer.from_state_dict(state)
    other = WeightNormalizer.fit(synthetic_zoo(graph, 4, seed=9))
    other.load_state_dict(state)
    for n in (loaded, other):
        assert all(torch.equal(a, b) for a, b in zip(n.normalize(zoo).groups, norm.normalize(zoo).groups))
    assert norm.matches(graph)

    leaves = [t.clone().requires_grad_() for t in zoo.groups]
    out = norm.denormalize(NodeTokens(leaves, graph))
    sum(t.sum() for t in out.groups).backward()
    for leaf, std in zip(leaves, norm.std):
        torch.testing.assert_close(leaf.grad, std.expand_as(leaf))


def test_bad_input(graph):
    zoo = synthetic_zoo(graph, 4)
    with pytest.raises(ValueError, match="at least 2 experts"):
        WeightNormalizer.fit(zoo.select(0))
    with pytest.raises(ValueError, match="granularity"):
        WeightNormalizer.fit(zoo, granularity="mode")
    with pytest.raises(ValueError, match="no chunks"):
        WeightNormalizer.fit([])
    norm = WeightNormalizer.fit(zoo)
    other = WeightGraph.from_module(FNO(**{**CFG, "hidden_channels": 4}))
    with pytest.raises(ValueError, match=r"tokens.groups\[0\]: expected shape \[E, 12, 5\]"):
        norm.normalize(synthetic_zoo(other, 2))
    with pytest.raises(ValueError, match="not a WeightNormalizer state dict"):
        WeightNormalizer.from_state_dict({"mean.0": torch.zeros(1, 1)})
    with pytest.raises(TypeError, match="NodeTokens"):
        norm.normalize(zoo.groups)
