"""BatchedMLP equals E separate ``MLPExpertConfig.build()`` experts, their vector fields stepped by ``rk4_step`` (forward,
rollout, gradients), round-trips modules / state dicts / the weight graph, keeps the hidden-unit permutation
symmetry, and ``evaluate_experts`` / ``paired_prefix_errors`` on it equal hand loops over the modules."""

import dataclasses

import pytest
import torch
from torch import nn

from dynadiff_fast.experts import evaluate_experts
from dynadiff_fast.experts.batched_mlp import BatchedMLP
from dynadiff_fast.experts.configs import MLPExpert, MLPExpertConfig, expert_config, rk4_step
from dynadiff_fast.experts.evaluate import paired_prefix_errors, prefix_error
from dynadiff_fast.weightspace.graph import NodeTokens, WeightGraph, permute_hidden

# (config, E, B): the paper's LV expert at the tiny preset, odd widths / batch sizes, one expert and one
# trajectory, a deeper net with 3 state channels, the single-Linear edge case.
CASES = [
    (expert_config("lotka_volterra", "tiny"), 3, 5),
    (MLPExpertConfig(state_dim=2, hidden=7, n_layers=2), 1, 1),
    (MLPExpertConfig(state_dim=3, hidden=13, n_layers=3), 5, 4),
    (MLPExpertConfig(state_dim=2, hidden=4, n_layers=1), 2, 3),
]
TOL = dict(rtol=1e-5, atol=1e-6)


def _experts(cfg, n, seed=0):
    torch.manual_seed(seed)
    return [cfg.build() for _ in range(n)]


def _manual_rollout(module, x0, steps):
    frames = [x0]
    for _ in range(steps):
        frames.append(rk4_step(module.field, frames[-1], module.dt))
    return torch.stack(frames, dim=1)  # [B, steps + 1, C]


@pytest.mark.parametrize("cfg,E,B", CASES)
def test_forward_equals_rk4_of_modules(cfg, E, B, rng):
    modules = _experts(cfg, E)
    bm = BatchedMLP.from_modules(modules)
    x = torch.randn(E, B, cfg.state_dim, generator=rng)
    with torch.no_grad():
        y = bm(x)
        assert y.shape == (E, B, cfg.state_dim)
        step = torch.stack([rk4_step(m.field, x[e], cfg.dt) for e, m in enumerate(modules)])
        torch.testing.assert_close(y, step, **TOL)
        torch.testing.assert_close(torch.stack([m(x[e]) for e, m in enumerate(modules)]), step, rtol=0, atol=0)
        torch.testing.assert_close(
            bm.vector_field(x), torch.stack([m.field(x[e]) for e, m in enumerate(modules)]), **TOL
        )
        # one input shared by every expert
        torch.testing.assert_close(bm(x[0]), torch.stack([rk4_step(m.field, x[0], cfg.dt) for m in modules]), **TOL)


@pytest.mark.parametrize("cfg,E,B", CASES[:3])
def test_rollout_matches_module_loop(cfg, E, B, rng):
    modules = _experts(dataclasses.replace(cfg, dt=0.05), E)
    bm = BatchedMLP.from_modules(modules)
    assert bm.dt == 0.05
    x0 = torch.randn(E, B, cfg.state_dim, generator=rng)
    with torch.no_grad():
        traj = bm.rollout(x0, steps=4)
        assert traj.shape == (E, B, 5, cfg.state_dim)
        assert torch.equal(traj[:, :, 0], x0)
        shared = bm.rollout(x0[0], steps=4)
        for e, m in enumerate(modules):
            torch.testing.assert_close(traj[e], _manual_rollout(m, x0[e], 4), **TOL)
            torch.testing.assert_close(shared[e], _manual_rollout(m, x0[0], 4), **TOL)
        assert bm.rollout(x0[0], steps=0).shape == (E, B, 1, cfg.state_dim)


@pytest.mark.parametrize("cfg,E,B", CASES)
def test_gradients_match_per_module_autograd(cfg, E, B, rng):
    modules = _experts(cfg, E)
    x0 = torch.randn(E, B, cfg.state_dim, generator=rng)
    target = torch.randn(E, B, 4, cfg.state_dim, generator=rng)
    bm = BatchedMLP.from_modules(modules)
    (bm.rollout(x0, steps=3) - target).square().sum().backward()
    for e, m in enumerate(modules):
        (_manual_rollout(m, x0[e], 3) - target[e]).square().sum().backward()
        grads = dict(m.named_parameters())
        for key, w in bm.stacked().items():
            assert w.grad is not None, key
            torch.testing.assert_close(w.grad[e], grads[key].grad, rtol=1e-4, atol=1e-5, msg=key)


def test_from_stacked_keeps_autograd_to_given_tensors(rng):
    cfg = CASES[0][0]
    src = BatchedMLP.from_modules(_experts(cfg, 2))
    leaves = {k: v.detach().clone().requires_grad_(True) for k, v in src.stacked().items()}
    bm = BatchedMLP.from_stacked(cfg, leaves)
    assert all(bm.stacked()[k] is leaves[k] for k in leaves)  # no copy
    assert len(list(bm.parameters())) == 0 and len(list(src.parameters())) == len(leaves)
    bm(torch.randn(3, cfg.state_dim, generator=rng)).square().mean().backward()
    assert all(t.grad is not None and t.grad.abs().sum() > 0 for t in leaves.values())


def test_round_trips(tmp_path):
    cfg = CASES[2][0]
    modules = _experts(cfg, 3)
    bm = BatchedMLP.from_modules(modules)
    assert bm.num_experts == 3 and bm.config == cfg
    assert list(bm.stacked()) == list(modules[0].state_dict())  # the nn.Sequential keys, in layer order
    for m, b in zip(modules, bm.to_modules()):
        assert all(torch.equal(v, b.state_dict()[k]) for k, v in m.state_dict().items())
    bm2 = BatchedMLP.from_state_dicts(cfg, [m.state_dict() for m in modules])
    assert all(torch.equal(bm.stacked()[k], bm2.stacked()[k]) for k in bm.stacked())
    bm3 = BatchedMLP.from_stacked(cfg, bm.stacked())
    assert all(torch.equal(bm3.state_dicts()[1][k], v) for k, v in modules[1].state_dict().items())
    # nn.Module state_dict round trip (checkpointing a trainable BatchedMLP)
    torch.save(bm.state_dict(), tmp_path / "bm.pt")
    bm4 = BatchedMLP.from_modules(_experts(cfg, 3, seed=1))
    bm4.load_state_dict(torch.load(tmp_path / "bm.pt"))
    assert all(torch.equal(bm4.stacked()[k], v) for k, v in bm.stacked().items())


def test_select_stacked_and_cat(rng):
    cfg = dataclasses.replace(CASES[0][0], dt=0.2)
    bm = BatchedMLP.from_modules(_experts(cfg, 4))
    x = torch.randn(3, cfg.state_dim, generator=rng)
    with torch.no_grad():
        full = bm.rollout(x, steps=2)
        torch.testing.assert_close(bm.select([3, 1]).rollout(x, 2), full[[3, 1]], rtol=0, atol=0)
        torch.testing.assert_close(bm.select(2).rollout(x, 2), full[2:3], rtol=0, atol=0)
        torch.testing.assert_close(bm.select(torch.tensor([0, 3])).rollout(x, 2), full[[0, 3]], rtol=0, atol=0)
        both = BatchedMLP.cat([bm.select(slice(0, 2)), bm.select(slice(2, 4))])
        assert both.num_experts == 4 and both.dt == 0.2
        torch.testing.assert_close(both.rollout(x, 2), full, rtol=0, atol=0)
    sub = bm.select([1, 2])
    assert sub.dt == bm.dt and all(torch.equal(v, bm.stacked()[k][1:3]) for k, v in sub.stacked().items())
    # select keeps autograd to the source's Parameters
    sub(x).sum().backward()
    grads = [w.grad for w in bm.stacked().values()]
    assert all(g[[0, 3]].abs().sum() == 0 and g[[1, 2]].abs().sum() > 0 for g in grads)


def test_float64_experts(rng):
    cfg = CASES[0][0]
    bm = BatchedMLP.from_modules(_experts(cfg, 2))
    bm64 = BatchedMLP.from_stacked(cfg, {k: v.detach().double() for k, v in bm.stacked().items()})
    x = torch.randn(2, 3, cfg.state_dim, generator=rng)
    with torch.no_grad():
        y64 = bm64(x.double())
        assert y64.dtype == torch.float64
        torch.testing.assert_close(bm(x).double(), y64, rtol=1e-5, atol=1e-6)
    with pytest.raises(TypeError, match="dtype"):
        bm64(x)


def test_bad_input_errors():
    cfg = CASES[0][0]
    modules = _experts(cfg, 2)
    bm = BatchedMLP.from_modules(modules)
    with pytest.raises(ValueError, match="channels"):
        bm(torch.randn(2, cfg.state_dim + 1))
    with pytest.raises(ValueError, match="num_experts"):
        bm(torch.randn(3, 1, cfg.state_dim))
    with pytest.raises(ValueError, match="got shape"):
        bm(torch.randn(cfg.state_dim))
    with pytest.raises(TypeError, match="dtype"):
        bm(torch.randn(1, cfg.state_dim, dtype=torch.float64))
    with pytest.raises(ValueError, match="steps"):
        bm.rollout(torch.randn(1, cfg.state_dim), steps=-1)
    for dt in (0.0, float("nan"), True):
        with pytest.raises(ValueError, match="dt"):
            MLPExpertConfig(dt=dt)
    with pytest.raises(ValueError, match="architecture"):
        BatchedMLP.from_modules([modules[0], MLPExpertConfig(hidden=8).build()])
    with pytest.raises(ValueError, match="structure"):  # ReLU in place of tanh: not an MLPExpertConfig net
        BatchedMLP.from_modules([MLPExpert(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 2), dt=0.1)])
    with pytest.raises(TypeError, match="MLPExpert"):  # a bare vector field has no step
        BatchedMLP.from_modules([nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 2))])
    with pytest.raises(ValueError, match="architecture"):  # another step is another expert
        BatchedMLP.from_modules([modules[0], dataclasses.replace(cfg, dt=0.2).build()])
    with pytest.raises(ValueError, match="shape"):
        BatchedMLP.from_state_dicts(cfg, [MLPExpertConfig(hidden=8).build().state_dict()])
    bad = dict(bm.stacked())
    bad.pop("0.bias")
    with pytest.raises(ValueError, match="missing"):
        BatchedMLP.from_stacked(cfg, bad)
    ragged = dict(bm.stacked())
    ragged["0.bias"] = ragged["0.bias"][:1]
    with pytest.raises(ValueError, match="leading expert axis"):
        BatchedMLP.from_stacked(cfg, ragged)
    with pytest.raises(ValueError, match="empty"):
        BatchedMLP.from_modules([])
    with pytest.raises(TypeError, match="MLPExpertConfig"):
        BatchedMLP(expert_config("kolmogorov", "tiny"), bm.stacked())


def test_experts_exports_it():
    import dynadiff_fast.experts as ws

    assert ws.BatchedMLP is BatchedMLP
    assert (
        ws.experts_type(CASES[0][0]) is BatchedMLP
        and ws.experts_type(expert_config("kolmogorov", "tiny")) is ws.BatchedFNO
    )
    with pytest.raises(TypeError, match="ExpertConfig"):
        ws.experts_type({"hidden": 8})


# -- weight graph ----------------------------------------------------------------------------------


@pytest.mark.parametrize("cfg", [CASES[0][0], CASES[2][0]])
def test_weight_graph_round_trip_and_functional_gradients(cfg, rng):
    modules = _experts(cfg, 3)
    bm = BatchedMLP.from_modules(modules)
    graph = WeightGraph.from_module(bm)
    assert graph.kind == "plain"
    assert graph == WeightGraph.from_config(cfg) == WeightGraph.from_module(modules[0])
    assert graph.group_sizes == (cfg.hidden,) * (cfg.n_layers - 1) + (cfg.state_dim,)
    tokens = graph.encode(bm)
    assert all(torch.equal(a, b) for a, b in zip(tokens.groups, graph.encode(modules).groups))
    for m, sd in zip(modules, graph.decode(tokens)):
        assert all(torch.equal(sd[k], v) for k, v in m.state_dict().items())

    # decode_stacked -> BatchedMLP.from_stacked: the functional loss through the RK4 rollout reaches the tokens
    leaves = [t.detach().requires_grad_() for t in tokens.groups]
    decoded = BatchedMLP.from_stacked(cfg, graph.decode_stacked(NodeTokens(leaves, graph)))
    x0 = torch.randn(4, cfg.state_dim, generator=rng)
    out = decoded.rollout(x0, 3)
    torch.testing.assert_close(out, bm.rollout(x0, 3), rtol=0, atol=0)
    out.square().mean().backward()
    assert all(leaf.grad is not None and leaf.grad.abs().sum() > 0 for leaf in leaves)
    # ...and equal the gradients w.r.t. the stacked weights, re-encoded
    bm.rollout(x0, 3).square().mean().backward()
    grads = {k: p.grad for k, p in bm.stacked().items()}
    for got, want in zip(leaves, graph.encode_stacked(grads).groups):
        torch.testing.assert_close(got.grad, want)


@pytest.mark.parametrize("cfg,space", [(CASES[0][0], "0"), (CASES[2][0], "0"), (CASES[2][0], "2")])
def test_hidden_permutation_preserves_function_and_permutes_graph(cfg, space, rng):
    """Permuting a hidden layer's units (rows of its Linear and bias, columns of the next Linear) is a
    symmetry of the vector field, hence of every RK4 step, and permutes that layer's graph nodes."""
    (net,) = _experts(cfg, 1)
    graph = WeightGraph.from_module(net)
    perm = torch.randperm(graph.space_size(space), generator=rng)
    permuted = permute_hidden(net, perm, space=space)
    assert not torch.equal(permuted[int(space)].weight, net[int(space)].weight)  # not a no-op
    x = torch.randn(6, cfg.state_dim, generator=rng)
    with torch.no_grad():
        torch.testing.assert_close(permuted(x), net(x), rtol=0, atol=1e-6)
        both = BatchedMLP.from_modules([net, permuted])
        traj = both.rollout(x, 5)
        torch.testing.assert_close(traj[1], traj[0], rtol=0, atol=1e-5)
    expected = graph.permute_tokens(graph.encode(net), perm, space=space)
    assert all(torch.equal(a, b) for a, b in zip(graph.encode(permuted).groups, expected.groups))
    # the permuted node order is perm: group `space` holds the permuted nodes of the original
    gi = graph.names.index(space)
    assert torch.equal(graph.encode(permuted).groups[gi][0, :, -1], net[int(space)].bias.detach()[perm])
    # ...and the stacked path (BatchedMLP.stacked() form) agrees with the module path
    stacked_p = graph.permute_stacked(BatchedMLP.from_modules([net]).stacked(), perm, space=space)
    assert all(torch.equal(stacked_p[k][0], v) for k, v in permuted.state_dict().items())


# -- evaluate_experts / prefix errors --------------------------------------------------------------


def _manual_rmse(modules, data, steps):
    """rmse[e, b, t-1] by stepping every module with rk4_step on its own."""
    out = torch.zeros(len(modules), data.shape[1], steps)
    with torch.no_grad():
        for e, m in enumerate(modules):
            traj = data[e if data.shape[0] > 1 else 0]
            x = traj[:, 0]
            for t in range(1, steps + 1):
                x = rk4_step(m.field, x, m.dt)
                out[e, :, t - 1] = ((x - traj[:, t]) ** 2).mean(dim=1).sqrt()
    return out


@pytest.fixture
def lv_experts():
    cfg = MLPExpertConfig(state_dim=2, hidden=9, n_layers=2)
    modules = _experts(cfg, 3)
    return modules, BatchedMLP.from_modules(modules)


@pytest.mark.parametrize("shared", [False, True])
def test_evaluate_experts_matches_manual_loop(lv_experts, shared, rng):
    modules, bm = lv_experts
    data = torch.randn(1 if shared else 3, 4, 6, 2, generator=rng)  # [E or 1, B, T+1, C]
    ref = _manual_rmse(modules, data, 5)
    for chunk in (None, 1, 2):
        got = evaluate_experts(bm, data, rollout_steps=5, chunk_size=chunk, reduce="none", progress=False)
        assert got.shape == (3, 4, 5)
        torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-6)
    mean = evaluate_experts(bm, data, rollout_steps=5, progress=False)
    torch.testing.assert_close(mean, ref.mean(dim=1), rtol=1e-4, atol=1e-6)


def test_evaluate_experts_dataset_source(lv_experts, rng):
    modules, bm = lv_experts
    frames = torch.randn(4, 2, 4, 2, generator=rng)  # [env, test traj, frames, C]

    class FakeDataset:  # the EnvDataset surface evaluate_experts reads; ODE frames are [C]
        n_traj, n_train_traj, n_frames, frame_shape = 5, 3, 4, (2,)

        def test(self, envs, normalized=True):
            return frames[envs]

    for envs in ([3, 0, 2], [1]):
        got = evaluate_experts(bm, (FakeDataset(), envs), 3, chunk_size=2, reduce="none", progress=False)
        torch.testing.assert_close(got, _manual_rmse(modules, frames[envs], 3), rtol=1e-4, atol=1e-6)


def test_prefix_errors_match_manual(lv_experts, rng):
    modules, bm = lv_experts
    obs = torch.randn(3, 5, 2, generator=rng)  # [E, L, C]: expert e's own observation sequence
    with torch.no_grad():
        manual = torch.stack(
            [(_manual_rollout(m, obs[e, :1], 4)[0, 1:] - obs[e, 1:]).square().mean() for e, m in enumerate(modules)]
        )
        for chunk in (256, 2):
            torch.testing.assert_close(paired_prefix_errors(bm, obs, chunk=chunk), manual, rtol=1e-5, atol=1e-7)
        roll = bm.rollout(obs[:, 0], 4).transpose(0, 1)  # every expert from every start: [N, K, L, C]
        assert prefix_error(roll, obs).shape == (3, 3)
        torch.testing.assert_close(prefix_error(roll, obs).diagonal(), manual, rtol=1e-5, atol=1e-7)


def test_evaluate_experts_bad_input(lv_experts):
    _, bm = lv_experts
    data = torch.randn(3, 2, 3, 2)
    with pytest.raises(ValueError, match="rollout_steps"):
        evaluate_experts(bm, data, rollout_steps=3, progress=False)
    with pytest.raises(ValueError, match="leading axis"):
        evaluate_experts(bm, data[:2], rollout_steps=1, progress=False)
    with pytest.raises(ValueError, match="channels"):
        evaluate_experts(bm, torch.randn(3, 2, 3, 3), rollout_steps=1, progress=False)
    with pytest.raises(ValueError, match=r"\[E or 1, B, T\+1, C\], got shape"):  # field frames for an ODE expert
        evaluate_experts(bm, torch.randn(3, 2, 3, 2, 8, 8), rollout_steps=1, progress=False)
