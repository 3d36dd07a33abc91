"""Weight graph: exact round trips (FNO configs, plain nets, batched), layout read independently from the
state dict, the hidden-channel permutation symmetry, differentiability of decode_stacked, bad input."""

import math
import warnings

import pytest
import torch
from torch import nn
from torch.func import functional_call

from dynadiff_fast.weightspace.graph import NodeTokens, WeightGraph, permute_hidden

neuralop = pytest.importorskip("neuralop")
from neuralop.models import FNO  # noqa: E402

warnings.filterwarnings("ignore", category=UserWarning, module="neuralop")

FNO_CONFIGS = {
    "1layer_8x8": dict(n_modes=(8, 8), in_channels=1, out_channels=1, hidden_channels=8, n_layers=1),
    "2layer_12x6_gates": dict(
        n_modes=(12, 6),
        in_channels=2,
        out_channels=3,
        hidden_channels=12,
        n_layers=2,
        fno_skip="soft-gating",
        channel_mlp_skip="linear",
    ),
    "4layer_8x8": dict(n_modes=(8, 8), in_channels=3, out_channels=3, hidden_channels=16, n_layers=4),
    "2layer_bare": dict(
        n_modes=(6, 5),
        in_channels=2,
        out_channels=2,
        hidden_channels=6,
        n_layers=2,
        lifting_channel_ratio=0,
        use_channel_mlp=False,
        fno_skip="identity",
        positional_embedding=None,
        projection_channel_ratio=1.5,
    ),
}


def make_fno(seed: int, **cfg) -> FNO:
    torch.manual_seed(seed)
    model = FNO(**cfg)
    with torch.no_grad():  # neuraloperator initialises biases/gates to constants; make every entry distinct
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


def state(model: nn.Module) -> dict:
    return {k: v for k, v in model.state_dict().items() if isinstance(v, torch.Tensor)}


def expected_num_nodes(sd: dict) -> int:
    """Output channels of every layer, counted from the state dict: each layer has one main weight."""
    n = 0
    for key, t in sd.items():
        if key.endswith("weight.tensor"):
            n += t.shape[1]  # spectral [in, out, *modes]
        elif key.endswith(".weight") and ".fcs." in key:
            n += t.shape[0]  # channel-MLP conv [out, in, 1]
    return n


@pytest.mark.parametrize("name", list(FNO_CONFIGS))
def test_fno_round_trip_is_exact(name):
    cfg = FNO_CONFIGS[name]
    models = [make_fno(seed, **cfg) for seed in range(3)]
    graph = WeightGraph.from_module(models[0])
    tokens = graph.encode(models)
    assert len(tokens.groups) == len(graph.groups) and tokens.num_experts == 3
    assert all(t.dtype == torch.float32 for t in tokens.groups)
    assert graph.num_nodes == expected_num_nodes(state(models[0]))
    assert graph.total_length == sum(p.numel() * (2 if p.is_complex() else 1) for p in models[0].parameters())

    for model, sd in zip(models, graph.decode(tokens)):
        ref = state(model)
        assert sd.keys() == ref.keys()
        for key in ref:
            assert sd[key].dtype == ref[key].dtype and torch.equal(sd[key], ref[key]), key
        reloaded = FNO(**cfg)
        reloaded.load_state_dict(sd)
        x = torch.randn(2, cfg["in_channels"], 16, 16)
        assert torch.equal(reloaded(x), model(x))

    # The stacked path (BatchedFNO form) gives the same tokens and decodes to the same tensors.
    stacked = {k: torch.stack([state(m)[k] for m in models]) for k in graph.keys}
    tokens_stacked = graph.encode_stacked(stacked)
    assert all(torch.equal(a, b) for a, b in zip(tokens.groups, tokens_stacked.groups))
    back = graph.decode_stacked(tokens)
    assert all(torch.equal(back[k], stacked[k]) and back[k].is_contiguous() for k in stacked)


def test_fno_layout_matches_paper_description():
    """Read entries back by hand: conv node o = [W[i, o, m] as (re, im) for i, m | skip[o, :] | bias[o]];
    the last channel-MLP node carries its soft gate between weights and bias."""
    cfg = FNO_CONFIGS["4layer_8x8"]
    model = make_fno(0, **cfg)
    sd = state(model)
    graph = WeightGraph.from_module(model)
    tokens = graph.encode(model)
    gi = graph.names.index("fno_blocks.convs.2")
    w = sd["fno_blocks.convs.2.weight.tensor"]  # [in, out, 8, 5]
    skip = sd["fno_blocks.fno_skips.2.conv.weight"][..., 0]  # [out, in]
    bias = sd["fno_blocks.convs.2.bias"].flatten()
    hidden, modes = cfg["hidden_channels"], w.shape[2] * w.shape[3]
    assert graph.groups[gi].feature_length == hidden * modes * 2 + hidden + 1
    feats = tokens.groups[gi][0]
    for o, i, m1, m2 in [(0, 0, 0, 0), (3, 5, 7, 4), (15, 15, 2, 1)]:
        base = i * modes * 2 + (m1 * w.shape[3] + m2) * 2
        assert feats[o, base] == w[i, o, m1, m2].real and feats[o, base + 1] == w[i, o, m1, m2].imag
        assert feats[o, hidden * modes * 2 + i] == skip[o, i]
        assert feats[o, -1] == bias[o]
    gm = graph.names.index("fno_blocks.channel_mlp.2.fcs.1")
    mlp_w = sd["fno_blocks.channel_mlp.2.fcs.1.weight"][..., 0]
    gate = sd["fno_blocks.channel_mlp_skips.2.weight"].flatten()
    feats = tokens.groups[gm][0]
    assert torch.equal(feats[:, : mlp_w.shape[1]], mlp_w)
    assert torch.equal(feats[:, mlp_w.shape[1]], gate)
    assert torch.equal(feats[:, -1], sd["fno_blocks.channel_mlp.2.fcs.1.bias"])


@pytest.mark.parametrize(
    "cfg, lengths",
    [
        # Paper App. I (Cylinder flow, Table 3): lifting [128, 5], [64, 129], convs [64, 6209], channel MLP
        # [32, 65], [64, 34], projection [128, 65], [2, 129].
        (
            dict(n_modes=(12, 6), in_channels=2, out_channels=2, hidden_channels=64, n_layers=4),
            [(128, 5), (64, 129)] + [(64, 6209), (32, 65), (64, 34)] * 4 + [(128, 65), (2, 129)],
        ),
    ],
)
def test_paper_cylinder_flow_profile(cfg, lengths):
    with torch.device("meta"):
        graph = WeightGraph.from_module(FNO(**cfg))
    assert list(zip(graph.group_sizes, graph.feature_lengths)) == lengths


def test_graph_from_state_dict_dict_and_config_agree():
    cfg = FNO_CONFIGS["2layer_12x6_gates"]
    model = make_fno(0, **cfg)
    graph = WeightGraph.from_module(model)
    assert WeightGraph.from_state_dict(model.state_dict()) == graph
    assert WeightGraph.from_dict(graph.to_dict()) == graph

    class Config:  # anything with .build() (ExpertConfig's contract)
        def build(self):
            return FNO(**cfg)

    assert WeightGraph.from_config(Config()) == graph


def test_expert_configs_build_graphs():
    configs = pytest.importorskip("dynadiff_fast.experts.configs")
    fno_graph = WeightGraph.from_config(configs.expert_config("kolmogorov", "tiny"))
    assert fno_graph.kind == "fno"
    mlp_graph = WeightGraph.from_config(configs.expert_config("lotka_volterra", "tiny"))
    assert mlp_graph.kind == "plain"


PLAIN_NETS = {
    "mlp": lambda: nn.Sequential(nn.Linear(2, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 2)),
    "conv": lambda: nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 5, (3, 5), padding=(1, 2), bias=False),
        nn.ReLU(),
        nn.Conv2d(5, 4, 1),
    ),
    "single_linear": lambda: nn.Linear(7, 3),
}


@pytest.mark.parametrize("name", list(PLAIN_NETS))
def test_plain_net_round_trip_is_exact(name):
    nets = []
    for seed in range(4):
        torch.manual_seed(seed)
        nets.append(PLAIN_NETS[name]())
    graph = WeightGraph.from_module(nets[0])
    assert graph.kind == "plain"
    assert WeightGraph.from_state_dict(nets[0].state_dict()) == graph
    layers = [m for m in nets[0].modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    assert graph.group_sizes == tuple(m.weight.shape[0] for m in layers)
    assert graph.feature_lengths == tuple(math.prod(m.weight.shape[1:]) + (m.bias is not None) for m in layers)
    tokens = graph.encode(nets)
    for net, sd in zip(nets, graph.decode(tokens)):
        assert sd.keys() == net.state_dict().keys()
        assert all(torch.equal(sd[k], v) for k, v in net.state_dict().items())


@pytest.mark.parametrize(
    "name, space, x_shape",
    [("mlp", "2", (9, 2)), ("conv", "0", (2, 3, 8, 8))],  # the 2nd Linear's / the 1st Conv's outputs
)
def test_plain_net_hidden_permutation(name, space, x_shape):
    torch.manual_seed(0)
    net = PLAIN_NETS[name]()
    graph = WeightGraph.from_module(net)
    perm = torch.randperm(graph.space_size(space))
    permuted = permute_hidden(net, perm, space=space)
    x = torch.randn(x_shape)
    torch.testing.assert_close(permuted(x), net(x), rtol=0, atol=1e-6)
    assert not torch.equal(permuted[int(space)].weight, net[int(space)].weight)
    expected = graph.permute_tokens(graph.encode(net), perm, space=space)
    assert all(torch.equal(a, b) for a, b in zip(graph.encode(permuted).groups, expected.groups))


@pytest.mark.parametrize("name", ["2layer_12x6_gates", "4layer_8x8"])
def test_fno_hidden_permutation_preserves_function_and_permutes_graph(name):
    cfg = FNO_CONFIGS[name]
    model = make_fno(0, **cfg)
    hidden = cfg["hidden_channels"]
    perm = torch.randperm(hidden, generator=torch.Generator().manual_seed(1))
    permuted = permute_hidden(model, perm)
    x = torch.randn(2, cfg["in_channels"], 16, 16)
    ref = model(x)
    torch.testing.assert_close(permuted(x), ref, rtol=1e-5, atol=1e-5 * ref.abs().max().item())
    # Not a no-op: the weights changed.
    assert not torch.equal(permuted.fno_blocks.convs[0].weight.tensor, model.fno_blocks.convs[0].weight.tensor)

    graph = WeightGraph.from_module(model)
    tokens, tokens_p = graph.encode(model), graph.encode(permuted)
    # Independent expectation for the spectral groups: nodes permuted, and inside each feature the C_in
    # input blocks of the spectral part and the C_in entries of a linear skip permuted the same way.
    for gi, g in enumerate(graph.groups):
        if not g.name.startswith("fno_blocks.convs."):
            continue
        t = tokens.groups[gi][0][perm]  # nodes
        spec = g.segments[0]
        blocks = t[:, : spec.length].reshape(hidden, hidden, -1)[:, perm].reshape(hidden, -1)
        rest = t[:, spec.length :]
        if g.segments[1].kind == "dense":  # linear skip
            rest = torch.cat([rest[:, :hidden][:, perm], rest[:, hidden:]], dim=1)
        assert torch.equal(tokens_p.groups[gi][0], torch.cat([blocks, rest], dim=1)), g.name
    # ...and the graph's own token permutation agrees on every group.
    expected = graph.permute_tokens(tokens, perm)
    assert all(torch.equal(a, b) for a, b in zip(tokens_p.groups, expected.groups))
    # State-dict path gives the same weights as the module path.
    sd_perm = permute_hidden(model.state_dict(), perm)
    assert all(torch.equal(sd_perm[k], v) for k, v in state(permuted).items())


def test_channel_mlp_hidden_permutation():
    cfg = FNO_CONFIGS["4layer_8x8"]
    model = make_fno(0, **cfg)
    space = "fno_blocks.channel_mlp.1.fcs.0"
    perm = torch.randperm(8)
    permuted = permute_hidden(model, perm, space=space)
    x = torch.randn(1, 3, 16, 16)
    torch.testing.assert_close(permuted(x), model(x), rtol=1e-5, atol=1e-6)


def test_decode_stacked_is_differentiable():
    cfg = dict(n_modes=(4, 4), in_channels=1, out_channels=1, hidden_channels=2, n_layers=1)
    graph = WeightGraph.from_module(make_fno(0, **cfg))
    tokens = graph.encode([make_fno(s, **cfg) for s in range(2)])
    leaves = [t.detach().double().requires_grad_() for t in tokens.groups]

    def fn(*groups):
        return tuple(graph.decode_stacked(NodeTokens(list(groups), graph)).values())

    assert torch.autograd.gradcheck(fn, tuple(leaves), fast_mode=True)

    # Through the network: d loss / d tokens == encode(d loss / d weights) (complex grads are
    # dL/dRe + i dL/dIm in PyTorch, i.e. exactly the (re, im) token layout).
    model = make_fno(3, **cfg)  # float32: neuraloperator's spectral conv is complex64-only
    x = torch.randn(2, 1, 8, 8)
    tok = graph.encode(model)
    tok_leaves = [t.detach().requires_grad_() for t in tok.groups]
    weights = {k: v[0] for k, v in graph.decode_stacked(NodeTokens(tok_leaves, graph)).items()}
    functional_call(model, weights, (x,)).square().mean().backward()
    model.zero_grad()
    model(x).square().mean().backward()
    grads = {name: p.grad for name, p in model.named_parameters()}
    expected = graph.encode(grads)
    for got, want in zip(tok_leaves, expected.groups):
        torch.testing.assert_close(got.grad, want)


def test_batched_source_and_packed_view():
    cfg = FNO_CONFIGS["1layer_8x8"]
    models = [make_fno(s, **cfg) for s in range(3)]
    graph = WeightGraph.from_module(models[0])
    stacked = {k: torch.stack([state(m)[k] for m in models]) for k in graph.keys}

    class FakeBatched:  # BatchedFNO's contract: .stacked() -> {key: [E, ...]}
        def stacked(self):
            return stacked

    tokens = graph.encode(FakeBatched())
    assert all(torch.equal(a, b) for a, b in zip(tokens.groups, graph.encode(models).groups))

    values, offsets, lengths, group_id = tokens.packed()
    assert values.shape == (3, graph.total_length) and offsets.shape == (graph.num_nodes,)
    assert torch.equal(
        lengths, torch.tensor([L for n, L in zip(graph.group_sizes, graph.feature_lengths) for _ in range(n)])
    )
    node = 0
    for gi, t in enumerate(tokens.groups):
        for j in range(t.shape[1]):
            assert group_id[node] == gi
            assert torch.equal(values[:, offsets[node] : offsets[node] + lengths[node]], t[:, j])
            node += 1
    back = NodeTokens.from_packed(values, graph)
    assert all(torch.equal(a, b) for a, b in zip(back.groups, tokens.groups))

    both = NodeTokens.cat([tokens.select(0), tokens.select([1, 2])])
    assert all(torch.equal(a, b) for a, b in zip(both.groups, tokens.groups))


def test_mismatching_zoo_names_first_bad_layer():
    graph = WeightGraph.from_module(make_fno(0, **FNO_CONFIGS["4layer_8x8"]))
    other = make_fno(1, **{**FNO_CONFIGS["4layer_8x8"], "hidden_channels": 12})
    with pytest.raises(ValueError, match=r"source\[1\]: key 'lifting.fcs.0.weight'.*\(32, 5, 1\)"):
        graph.encode([make_fno(2, **FNO_CONFIGS["4layer_8x8"]), other])
    modes = make_fno(1, **{**FNO_CONFIGS["4layer_8x8"], "n_modes": (6, 8)})
    with pytest.raises(ValueError, match=r"fno_blocks.convs.0.weight.tensor.*\(16, 16, 6, 5\).*\(16, 16, 8, 5\)"):
        graph.encode(modes)
    deeper = make_fno(1, **{**FNO_CONFIGS["4layer_8x8"], "n_layers": 5})
    with pytest.raises(ValueError, match="unexpected key 'fno_blocks.convs.4"):
        graph.encode(deeper)
    sd = state(make_fno(1, **FNO_CONFIGS["4layer_8x8"]))
    del sd["fno_blocks.channel_mlp_skips.3.weight"]
    with pytest.raises(ValueError, match="missing key 'fno_blocks.channel_mlp_skips.3.weight'"):
        graph.encode(sd)
    sd = state(make_fno(1, **FNO_CONFIGS["4layer_8x8"]))
    sd["fno_blocks.convs.0.weight.tensor"] = sd["fno_blocks.convs.0.weight.tensor"].real
    with pytest.raises(TypeError, match="complex"):
        graph.encode(sd)


def test_bad_tokens_and_arguments():
    graph = WeightGraph.from_module(make_fno(0, **FNO_CONFIGS["1layer_8x8"]))
    tokens = graph.encode(make_fno(0, **FNO_CONFIGS["1layer_8x8"]))
    with pytest.raises(ValueError, match="expected shape"):
        graph.decode(NodeTokens([t[:, :, :-1] for t in tokens.groups], graph))
    with pytest.raises(ValueError, match="groups"):
        graph.decode_stacked(tokens.groups[:-1])
    with pytest.raises(ValueError, match="values"):
        NodeTokens.from_packed(torch.zeros(2, 5), graph)
    with pytest.raises(ValueError, match="perm"):
        graph.permute_tokens(tokens, [0, 0, 1, 2, 3, 4, 5, 6])
    with pytest.raises(ValueError, match="space"):
        graph.permute_tokens(tokens, [0], space="nope")
    with pytest.raises(TypeError, match="source"):
        graph.encode(3.0)
    with pytest.raises(ValueError, match="empty"):
        graph.encode([])


def test_unsupported_modules_are_rejected():
    with pytest.raises(TypeError, match="'1' is a LayerNorm"):
        WeightGraph.from_module(nn.Sequential(nn.Linear(2, 3), nn.LayerNorm(3)))
    with pytest.raises(ValueError, match="groups=2"):
        WeightGraph.from_module(nn.Conv2d(4, 4, 3, groups=2))
    with torch.device("meta"):
        normed = FNO(n_modes=(4, 4), in_channels=1, out_channels=1, hidden_channels=4, norm="group_norm")
    with pytest.raises(ValueError, match="norm"):
        WeightGraph.from_module(normed)
    with pytest.raises(ValueError, match="not a Linear/Conv weight"):
        WeightGraph.from_state_dict({"scale": torch.ones(3)})


def test_batched_fno_round_trip_and_functional_gradients():
    batched_fno = pytest.importorskip("dynadiff_fast.experts.batched_fno")
    configs = pytest.importorskip("dynadiff_fast.experts.configs")
    cfg = configs.ExpertConfig(in_channels=2, out_channels=2, hidden_channels=6, n_modes=(6, 6), n_layers=2)
    models = []
    for seed in range(3):
        torch.manual_seed(seed)
        models.append(cfg.build())
    # The torch backend: this tests the graph, the kernels have their own tests.
    bf = batched_fno.BatchedFNO.from_modules(models, backend="torch")
    graph = WeightGraph.from_module(bf)
    assert graph == WeightGraph.from_config(cfg) == WeightGraph.from_module(models[0])
    tokens = graph.encode(bf)
    assert all(torch.equal(a, b) for a, b in zip(tokens.groups, graph.encode(models).groups))

    # decode_stacked -> BatchedFNO.from_stacked: the functional loss reaches the tokens.
    leaves = [t.detach().requires_grad_() for t in tokens.groups]
    decoded = batched_fno.BatchedFNO.from_stacked(cfg, graph.decode_stacked(NodeTokens(leaves, graph)), backend="torch")
    x = torch.randn(2, 2, 12, 12)
    out = decoded(x)
    torch.testing.assert_close(out, bf(x), rtol=0, atol=0)
    out.square().mean().backward()
    assert all(leaf.grad is not None and leaf.grad.abs().sum() > 0 for leaf in leaves)
    # ...and equal the gradients w.r.t. the stacked weights, re-encoded.
    bf.zero_grad()
    bf(x).square().mean().backward()
    grads = {k: p.grad for k, p in bf.stacked().items()}
    for got, want in zip(leaves, graph.encode_stacked(grads).groups):
        torch.testing.assert_close(got.grad, want)
