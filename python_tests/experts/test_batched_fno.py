"""BatchedFNO equals neuraloperator's FNO per expert, is differentiable w.r.t. the stacked weights,
round-trips modules/state dicts, and rejects bad input with clear errors."""

import pytest
import torch

from dynadiff_fast.experts.batched_fno import BatchedFNO
from dynadiff_fast.experts.configs import ExpertConfig

CONFIGS = [
    # (config, grid): neuraloperator defaults, Table 3 cylinder modes on a non-square grid, odd
    # grids and odd modes, every skip type, preactivation, no embedding, single-layer lifting, 1-8 layers.
    (ExpertConfig(2, 2, 16, (8, 8), 4), (32, 32)),
    (ExpertConfig(2, 2, 12, (12, 6), 4), (48, 24)),
    (ExpertConfig(3, 1, 8, (7, 5), 2), (33, 17)),
    (ExpertConfig(3, 3, 8, (8, 8), 1, fno_skip="soft-gating", channel_mlp_skip="linear"), (9, 16)),
    (
        ExpertConfig(
            3,
            3,
            8,
            (8, 8),
            3,
            fno_skip="identity",
            channel_mlp_skip=None,
            preactivation=True,
            lifting_channel_ratio=0,
            positional_embedding=None,
            projection_channel_ratio=1,
        ),
        (16, 16),
    ),
    (ExpertConfig(2, 2, 8, (6, 6), 3, fno_skip=None, use_channel_mlp=False, channel_mlp_expansion=1.0), (16, 15)),
    (ExpertConfig(3, 3, 8, (4, 4), 8), (8, 8)),
]


def _experts(cfg, n, seed=0):
    torch.manual_seed(seed)
    return [cfg.build() for _ in range(n)]


def _rel(a, b):
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize("cfg,grid", CONFIGS)
def test_forward_equals_neuraloperator(cfg, grid, rng):
    modules = _experts(cfg, 3)
    bf = BatchedFNO.from_modules(modules, backend="torch")
    x = torch.randn(3, 2, cfg.in_channels, *grid, generator=rng)
    with torch.no_grad():
        ref = torch.stack([m(x[e]) for e, m in enumerate(modules)])
        for chunk in (None, 1, 2):
            assert _rel(bf(x, chunk_size=chunk), ref) < 1e-5
        shared = torch.stack([m(x[0]) for m in modules])
        assert _rel(bf(x[0]), shared) < 1e-5


def test_all_backends_agree():
    from dynadiff_fast.ops.spectral_mix import OP

    cfg, grid = CONFIGS[0]
    bf = BatchedFNO.from_modules(_experts(cfg, 2))
    x = torch.randn(2, 1, cfg.in_channels, *grid)
    with torch.no_grad():
        ref = bf(x)
        for backend in OP.usable("cpu"):
            bf.backend = backend
            assert _rel(bf(x), ref) < 1e-5, backend


def test_rollout_matches_module_loop(rng):
    cfg = ExpertConfig(2, 2, 8, (6, 6), 2)
    modules = _experts(cfg, 2)
    bf = BatchedFNO.from_modules(modules)
    x0 = torch.randn(3, 2, 16, 16, generator=rng)
    with torch.no_grad():
        traj = bf.rollout(x0, steps=3, chunk_size=1)
        assert traj.shape == (2, 3, 4, 2, 16, 16)
        for e, m in enumerate(modules):
            x = x0
            assert torch.equal(traj[e, :, 0], x0)
            for t in range(3):
                x = m(x)
                assert _rel(traj[e, :, t + 1], x) < 1e-5
        assert bf.rollout(x0, steps=0).shape == (2, 3, 1, 2, 16, 16)


@pytest.mark.parametrize("cfg,grid", [CONFIGS[0], CONFIGS[2], CONFIGS[4]])
def test_gradients_match_per_module_autograd(cfg, grid, rng):
    modules = _experts(cfg, 2)
    x = torch.randn(2, 2, cfg.in_channels, *grid, generator=rng)
    target = torch.randn(2, 2, cfg.out_channels, *grid, generator=rng)
    bf = BatchedFNO.from_modules(modules)
    ((bf(x, chunk_size=1) - target) ** 2).sum().backward()
    for e, m in enumerate(modules):
        ((m(x[e]) - target[e]) ** 2).sum().backward()
        grads = {n: p.grad for n, p in m.named_parameters()}
        for key, w in bf.stacked().items():
            assert w.grad is not None, key
            assert _rel(w.grad[e], grads[key]) < 1e-4, key


def test_from_stacked_keeps_autograd_to_given_tensors(rng):
    cfg, grid = CONFIGS[0]
    src = BatchedFNO.from_modules(_experts(cfg, 2))
    leaves = {k: v.detach().clone().requires_grad_(True) for k, v in src.stacked().items()}
    bf = BatchedFNO.from_stacked(cfg, leaves)
    assert all(bf.stacked()[k] is leaves[k] for k in leaves)  # no copy
    assert len(list(bf.parameters())) == 0
    bf(torch.randn(1, cfg.in_channels, *grid, generator=rng)).square().mean().backward()
    assert all(t.grad is not None and t.grad.abs().sum() > 0 for t in leaves.values())


def test_round_trips(tmp_path):
    cfg, grid = CONFIGS[1]
    modules = _experts(cfg, 3)
    bf = BatchedFNO.from_modules(modules)
    assert bf.num_experts == 3 and bf.config == cfg
    back = bf.to_modules()
    for m, b in zip(modules, back):
        sd_m, sd_b = m.state_dict(), b.state_dict()
        assert all(torch.equal(sd_m[k], sd_b[k]) for k in sd_m if torch.is_tensor(sd_m[k]))
    bf2 = BatchedFNO.from_state_dicts(cfg, [m.state_dict() for m in modules])
    assert all(torch.equal(bf.stacked()[k], bf2.stacked()[k]) for k in bf.stacked())
    stacked = bf.stacked()
    assert stacked["fno_blocks.convs.0.weight.tensor"].dtype == torch.complex64
    bf3 = BatchedFNO.from_stacked(cfg, stacked)
    assert all(torch.equal(bf3.state_dicts()[1][k], modules[1].state_dict()[k]) for k in stacked)
    # nn.Module state_dict round trip (checkpointing a trainable BatchedFNO)
    torch.save(bf.state_dict(), tmp_path / "bf.pt")
    bf4 = BatchedFNO.from_modules(_experts(cfg, 3, seed=1))
    bf4.load_state_dict(torch.load(tmp_path / "bf.pt"))
    assert all(torch.equal(bf4.stacked()[k], stacked[k]) for k in stacked)


def test_select_and_cat(rng):
    cfg, grid = CONFIGS[0]
    bf = BatchedFNO.from_modules(_experts(cfg, 4))
    x = torch.randn(1, cfg.in_channels, *grid, generator=rng)
    with torch.no_grad():
        full = bf(x)
        assert _rel(bf.select([3, 1])(x), full[[3, 1]]) < 1e-6
        assert _rel(bf.select(2)(x), full[2:3]) < 1e-6
        assert _rel(bf.select(torch.tensor([0, 3]))(x), full[[0, 3]]) < 1e-6
        both = BatchedFNO.cat([bf.select(slice(0, 2)), bf.select(slice(2, 4))])
        assert both.num_experts == 4 and _rel(both(x), full) < 1e-6


def test_bad_input_errors():
    cfg, grid = CONFIGS[0]
    modules = _experts(cfg, 2)
    bf = BatchedFNO.from_modules(modules)
    with pytest.raises(ValueError, match="channels"):
        bf(torch.randn(2, cfg.in_channels + 1, *grid))
    with pytest.raises(ValueError, match="too small"):
        bf(torch.randn(2, cfg.in_channels, 4, 32))
    with pytest.raises(ValueError, match="num_experts"):
        bf(torch.randn(3, 1, cfg.in_channels, *grid))
    with pytest.raises(ValueError, match="got shape"):
        bf(torch.randn(cfg.in_channels, *grid))
    with pytest.raises(TypeError, match="dtype"):
        bf(torch.randn(1, cfg.in_channels, *grid, dtype=torch.float64))
    with pytest.raises(ValueError, match="chunk_size"):
        bf(torch.randn(1, cfg.in_channels, *grid), chunk_size=0)
    with pytest.raises(ValueError, match="steps"):
        bf.rollout(torch.randn(1, cfg.in_channels, *grid), steps=-1)
    other = ExpertConfig(2, 2, 8, (8, 8), 4).build()
    with pytest.raises(ValueError, match="architecture"):
        BatchedFNO.from_modules([modules[0], other])
    with pytest.raises(ValueError, match="shape"):
        BatchedFNO.from_state_dicts(cfg, [other.state_dict()])
    bad = dict(bf.stacked())
    bad.pop("lifting.fcs.0.bias")
    with pytest.raises(ValueError, match="missing"):
        BatchedFNO.from_stacked(cfg, bad)
    ragged = dict(bf.stacked())
    ragged["lifting.fcs.0.bias"] = ragged["lifting.fcs.0.bias"][:1]
    with pytest.raises(ValueError, match="leading expert axis"):
        BatchedFNO.from_stacked(cfg, ragged)
    with pytest.raises(ValueError, match="empty"):
        BatchedFNO.from_modules([])


def test_unsupported_fno_options_are_rejected():
    from neuralop.models import FNO

    for kwargs in ({"norm": "group_norm"}, {"factorization": "tucker", "rank": 0.5}, {"domain_padding": 0.1}):
        m = FNO(n_modes=(8, 8), in_channels=2, out_channels=2, hidden_channels=8, **kwargs)
        with pytest.raises(ValueError, match="not supported"):
            BatchedFNO.from_modules([m])


def test_float64_experts(rng):
    """Stacked fp64/complex128 weights run in fp64 (spectral_mix and the DFTs follow the dtype)."""
    cfg, grid = CONFIGS[2]
    bf = BatchedFNO.from_modules(_experts(cfg, 2))
    w64 = {k: (v.cdouble() if v.is_complex() else v.double()).detach() for k, v in bf.stacked().items()}
    bf64 = BatchedFNO.from_stacked(cfg, w64)
    x = torch.randn(2, 1, cfg.in_channels, *grid, generator=rng)
    with torch.no_grad():
        y64 = bf64(x.double())
        assert y64.dtype == torch.float64
        assert _rel(bf(x).double(), y64) < 1e-5
    with pytest.raises(TypeError, match="dtype"):
        bf64(x)


@pytest.mark.slow
def test_torch_compile_full_graph(rng):
    """The custom op (fake impl + autograd) lets torch.compile capture a whole BatchedFNO step."""
    cfg = ExpertConfig(2, 2, 8, (6, 6), 2)
    bf = BatchedFNO.from_modules(_experts(cfg, 2))
    x = torch.randn(2, 2, 16, 16, generator=rng)
    compiled = torch.compile(bf, backend="aot_eager", fullgraph=True)
    y = compiled(x)
    assert _rel(y, bf(x)) < 1e-6
    y.square().sum().backward()
    assert all(w.grad is not None for w in bf.stacked().values())
