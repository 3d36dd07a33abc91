"""node_attention: the Triton flash kernels (interpreter on CPU) against softmax(qk^T/sqrt(d))v, values
and gradients, odd node counts / head dims, strided q/k/v views of one packed tensor, opcheck."""

import pytest
import torch

from dynadiff_fast._backend import BackendUnavailable
from dynadiff_fast.ops.node_attention import OP, node_attention, reference

SHAPES = [(1, 1, 1, 16), (2, 2, 7, 8), (1, 3, 17, 5), (1, 1, 33, 20)]  # N = 1, 7, block + 1, 2 blocks + 1


def _qkv(shape, rng, dtype=torch.float32):
    """q, k, v as strided views of one [B, N, 3, H, dh] tensor, as the VAE's fused qkv linear makes them."""
    B, H, N, dh = shape
    qkv = torch.randn(B, N, 3, H, dh, generator=rng, dtype=dtype)
    return [qkv[:, :, i].transpose(1, 2).detach().requires_grad_() for i in range(3)]


def test_reference_is_softmax_attention(rng):
    q, k, v = _qkv((1, 2, 5, 3), rng, torch.float64)
    torch.testing.assert_close(reference.node_attention(q, k, v), reference.node_attention_math(q, k, v))
    torch.autograd.gradcheck(reference.node_attention_math, (q, k, v))
    # the custom op's written-out backward (node_attention(backend="torch") itself runs SDPA's autograd)
    op = torch.ops.dynadiff.node_attention.default
    torch.autograd.gradcheck(lambda *t: op(*t, "torch")[0], (q, k, v))


@pytest.mark.parametrize("shape", SHAPES)
def test_triton_matches_reference(shape, rng):
    q, k, v = _qkv(shape, rng)
    o = node_attention(q, k, v, backend="triton")
    do = torch.randn(o.shape, generator=rng)
    grads = torch.autograd.grad(o, (q, k, v), do)
    ref = reference.node_attention_math(q, k, v)
    ref_grads = torch.autograd.grad(ref, (q, k, v), do)
    torch.testing.assert_close(o, ref, atol=1e-5, rtol=1e-5)
    for name, g, r in zip("qkv", grads, ref_grads):
        torch.testing.assert_close(g, r, atol=1e-5, rtol=1e-5, msg=lambda m, n=name: f"d{n}: {m}")


def test_triton_writes_every_output(rng):
    from dynadiff_fast.ops.node_attention import triton as impl

    q, k, v = (t.detach() for t in _qkv((1, 2, 19, 6), rng))
    out = torch.full((1, 2, 19, 6), float("nan"))
    o, lse = impl.node_attention_fwd(q, k, v, out=out)
    assert torch.isfinite(o).all() and torch.isfinite(lse).all()
    torch.testing.assert_close(o, reference.node_attention(q, k, v), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_opcheck(backend, rng):
    q, k, v = _qkv((1, 2, 5, 4), rng)
    torch.library.opcheck(torch.ops.dynadiff.node_attention.default, (q, k, v, backend))


def test_bad_input_and_backends(rng):
    q, k, v = _qkv((1, 1, 4, 4), rng)
    with pytest.raises(ValueError, match="k: expected the shape of q"):
        node_attention(q, k[:, :, :3], v)
    with pytest.raises(TypeError, match="v: dtype float64"):
        node_attention(q, k, v.double())
    with pytest.raises(ValueError, match="q: expected 4 dims"):
        node_attention(q[0], k, v)
    with pytest.raises(TypeError, match="float64"):
        node_attention(q.double(), k.double(), v.double(), backend="triton")
    with pytest.raises(BackendUnavailable, match="no cuda implementation"):
        node_attention(q, k, v, backend="cuda")
    assert OP.resolve("auto", "cpu") == "torch"
