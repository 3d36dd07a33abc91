"""ragged_proj / ragged_unproj / ragged_wgrad: Triton kernels (interpreter on CPU) against the per-group
reference, values and gradients, odd node counts and feature lengths (1, 7, block + 1), empty groups,
non-contiguous node order, NaN-prefilled outputs, opcheck, bad input."""

import pytest
import torch

from dynadiff_fast.ops.ragged_proj import RaggedLayout, ragged_proj, ragged_unproj, reference
from dynadiff_fast.ops.ragged_proj import triton as tri

SIZES = [(3, 5), (1, 17), (7, 1), (0, 4), (2, 33)]  # (n_g, f_g): odd, block + 1, one feature, empty group


def _layout(shuffled=False):
    lay = RaggedLayout.from_group_sizes(SIZES)
    if not shuffled:
        return lay, lay.num_values
    # Nodes stored out of order, with a gap of 3 unused values in front: the ops follow node_offset.
    perm = torch.randperm(lay.num_nodes, generator=torch.Generator().manual_seed(3))
    lengths = torch.repeat_interleave(torch.tensor([f for _, f in SIZES]), torch.tensor([n for n, _ in SIZES]))
    starts = torch.cumsum(lengths[perm], 0) - lengths[perm] + 3
    offset = torch.empty_like(lay.node_offset)
    offset[perm] = starts
    return RaggedLayout(lay.group_nodes, lay.group_feats, offset), lay.num_values + 3


def _args(lay):
    return lay.node_offset, list(lay.group_nodes), list(lay.group_feats)


def _data(lay, F, E, D, rng, dtype=torch.float32):
    K = lay.group_feats[-1]
    t = {
        "values": torch.randn(E, F, generator=rng, dtype=dtype),
        "weight": torch.randn(K, D, generator=rng, dtype=dtype),
        "bias": torch.randn(lay.num_nodes, D, generator=rng, dtype=dtype),
        "h": torch.randn(E, lay.num_nodes, D, generator=rng, dtype=dtype),
        "fbias": torch.randn(K, generator=rng, dtype=dtype),
    }
    return {k: v.requires_grad_() for k, v in t.items()}


def test_layout_pack_unpack_round_trip(rng):
    lay = RaggedLayout.from_group_sizes(SIZES)
    groups = [torch.randn(2, n, f, generator=rng) for n, f in SIZES]
    packed = lay.pack(groups)
    assert packed.shape == (2, lay.num_values)
    for a, b in zip(groups, lay.unpack(packed)):
        assert torch.equal(a, b)
    assert lay.node_group.tolist() == [0, 0, 0, 1, 2, 2, 2, 2, 2, 2, 2, 4, 4]
    with pytest.raises(ValueError, match=r"groups\[1\]: expected shape \[E, 1, 17\]"):
        lay.pack([groups[0], groups[0], *groups[2:]])


def test_reference_gradcheck(rng):
    lay, F = _layout(shuffled=True)
    t = _data(lay, F, 2, 3, rng, torch.float64)
    torch.autograd.gradcheck(
        lambda v, w, b: reference.ragged_proj(v, w, *_args(lay), b), (t["values"], t["weight"], t["bias"])
    )
    # the custom ops' hand-written backward (unproj / wgrad) against finite differences
    torch.autograd.gradcheck(
        lambda v, w, b: ragged_proj(v, w, *_args(lay), b, backend="torch"), (t["values"], t["weight"], t["bias"])
    )
    torch.autograd.gradcheck(
        lambda h, w, b: ragged_unproj(h, w, *_args(lay), F, b, backend="torch"), (t["h"], t["weight"], t["fbias"])
    )


@pytest.mark.parametrize("shuffled", [False, True])
@pytest.mark.parametrize("E,D", [(1, 1), (2, 7), (3, 17)])
def test_triton_matches_reference(shuffled, E, D, rng):
    lay, F = _layout(shuffled)
    t = _data(lay, F, E, D, rng)
    y = ragged_proj(t["values"], t["weight"], *_args(lay), t["bias"], backend="triton")
    ref = reference.ragged_proj(t["values"], t["weight"], *_args(lay), t["bias"])
    torch.testing.assert_close(y, ref, atol=1e-5, rtol=1e-5)
    dy = torch.randn(y.shape, generator=rng)
    got = torch.autograd.grad(y, (t["values"], t["weight"], t["bias"]), dy)
    want = torch.autograd.grad(ref, (t["values"], t["weight"], t["bias"]), dy)
    for name, g, w in zip(("values", "weight", "bias"), got, want):
        torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-5, msg=lambda m, n=name: f"proj d{n}: {m}")

    out = ragged_unproj(t["h"], t["weight"], *_args(lay), F, t["fbias"], backend="triton")
    ref = reference.ragged_unproj(t["h"], t["weight"], *_args(lay), F, t["fbias"])
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    dout = torch.randn(out.shape, generator=rng)
    got = torch.autograd.grad(out, (t["h"], t["weight"], t["fbias"]), dout)
    want = torch.autograd.grad(ref, (t["h"], t["weight"], t["fbias"]), dout)
    for name, g, w in zip(("h", "weight", "bias"), got, want):
        torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-5, msg=lambda m, n=name: f"unproj d{n}: {m}")


def test_triton_writes_every_output(rng):
    sizes = [(3, 5), (1, 17), (7, 1)]
    lay = RaggedLayout.from_group_sizes(sizes)
    E, D, F, K = 2, 5, lay.num_values, lay.group_feats[-1]
    v, w = torch.randn(E, F, generator=rng), torch.randn(K, D, generator=rng)
    h = torch.randn(E, lay.num_nodes, D, generator=rng)
    nan = float("nan")
    y = tri.ragged_proj(v, w, *_args(lay), out=torch.full((E, lay.num_nodes, D), nan))
    torch.testing.assert_close(y, reference.ragged_proj(v, w, *_args(lay)), atol=1e-5, rtol=1e-5)
    o = tri.ragged_unproj(h, w, *_args(lay), F, out=torch.full((E, F), nan))
    torch.testing.assert_close(o, reference.ragged_unproj(h, w, *_args(lay), F), atol=1e-5, rtol=1e-5)
    dw = tri.ragged_wgrad(v, h, *_args(lay), out=torch.full((K, D), nan))
    torch.testing.assert_close(dw, reference.ragged_wgrad(v, h, *_args(lay)), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_opcheck(backend, rng):
    lay, F = _layout(shuffled=True)
    t = _data(lay, F, 2, 3, rng)
    a = _args(lay)
    torch.library.opcheck(torch.ops.dynadiff.ragged_proj.default, (t["values"], t["weight"], *a, t["bias"], backend))
    torch.library.opcheck(torch.ops.dynadiff.ragged_unproj.default, (t["h"], t["weight"], *a, F, t["fbias"], backend))
    torch.library.opcheck(torch.ops.dynadiff.ragged_wgrad.default, (t["values"].detach(), t["h"].detach(), *a, backend))


def test_bad_input(rng):
    lay, F = _layout()
    t = _data(lay, F, 2, 3, rng)
    v, w = t["values"].detach(), t["weight"].detach()
    with pytest.raises(ValueError, match="weight: expected 60 rows"):
        ragged_proj(v, w[:-1], *_args(lay))
    with pytest.raises(ValueError, match="node spans reach"):
        ragged_proj(v[:, :-1], w, *_args(lay))
    with pytest.raises(ValueError, match="group_feats: expected a non-decreasing"):
        ragged_proj(v, w, lay.node_offset, list(lay.group_nodes), [0, 5, 3, 30, 40, 60])
    with pytest.raises(TypeError, match="weight: expected torch.float32"):
        ragged_proj(v, w.double(), *_args(lay))
    with pytest.raises(TypeError, match="node_offset: dtype int32"):
        ragged_proj(v, w, lay.node_offset.int(), *_args(lay)[1:])
    with pytest.raises(ValueError, match="bias: expected shape"):
        ragged_proj(v, w, *_args(lay), torch.zeros(2, 3))
    with pytest.raises(TypeError, match="the triton backend takes float32 tensors, got float64"):
        ragged_proj(v.double(), w.double(), *_args(lay), backend="triton")
    with pytest.raises(ValueError, match="num_values"):
        ragged_unproj(t["h"], w, *_args(lay), -1)
