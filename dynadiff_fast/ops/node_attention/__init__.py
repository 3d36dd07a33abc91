"""Node attention: multi-head softmax attention over all nodes of each expert's weight graph.

    o = node_attention(q, k, v)      q, k, v, o: [B, H, N, dh]

The weight VAE's attention blocks run this after the ragged per-group projection
(``dynadiff_fast.ops.ragged_proj``) has brought every node to the common width. The Triton backend is a
flash-style kernel pair (forward with online softmax, FlashAttention-2 backward) that never builds the
[N, N] score matrix; the torch backend is ``F.scaled_dot_product_attention``.

backend: ``"auto"`` (triton on CUDA, torch on CPU, where the Triton interpreter is slow), ``"torch"``,
``"triton"``.
"""

from __future__ import annotations

import torch

from dynadiff_fast import _backend
from dynadiff_fast._tensor import as_tensor, check_tensor
from dynadiff_fast.ops.node_attention import reference
from dynadiff_fast.profiling import nvtx_range

OP = _backend.hot_op("node_attention", __name__, ("torch", "triton"), fn="node_attention_fwd")
# The backward runs on the backend the forward resolved; `dynadiff info` lists node_attention only.
BACKWARD_OP = _backend.hot_op("node_attention_bwd", __name__, ("torch", "triton"), listed=False)


@torch.library.custom_op("dynadiff::node_attention", mutates_args=())
def _attention_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, backend: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns (o, lse); lse (log2 units, [B, H, N]) is only meaningful for the triton backend."""
    with nvtx_range("kernel/node_attention"):
        o, lse = OP.impl(backend, q.device.type)(q, k, v)
    if lse is None:
        lse = q.new_empty(0, dtype=torch.float32)
    return o, lse


@_attention_op.register_fake
def _(q, k, v, backend):
    B, H, N, dh = q.shape
    lse_shape = (B, H, N) if backend == "triton" else (0,)
    return q.new_empty(B, H, N, dh), q.new_empty(lse_shape, dtype=torch.float32)


def _setup(ctx, inputs, output):
    q, k, v, backend = inputs
    o, lse = output
    ctx.save_for_backward(q, k, v, o, lse)
    ctx.backend = OP.resolve(backend, q.device.type)


@torch.library.custom_op("dynadiff::node_attention_bwd", mutates_args=())
def _attention_bwd_op(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    o: torch.Tensor,
    lse: torch.Tensor,
    do: torch.Tensor,
    backend: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dq, dk, dv) of node_attention."""
    with nvtx_range("kernel/node_attention_bwd"):
        return BACKWARD_OP.impl(backend, q.device.type)(q, k, v, o, lse, do)


@_attention_bwd_op.register_fake
def _(q, k, v, o, lse, do, backend):
    return q.new_empty(q.shape), q.new_empty(q.shape), q.new_empty(q.shape)


def _backward(ctx, do, _dlse):
    q, k, v, o, lse = ctx.saved_tensors
    dq, dk, dv = _attention_bwd_op(q, k, v, o, lse, do, ctx.backend)
    return dq, dk, dv, None


_attention_op.register_autograd(_backward, setup_context=_setup)


def node_attention(q, k, v, *, backend: str = "auto") -> torch.Tensor:
    """softmax(q k^T / sqrt(dh)) v over the N nodes of each of B experts and H heads.

    Args:
        q, k, v: [B, H, N, dh], same dtype and device (float32 for triton; any float dtype for torch).
    Returns:
        [B, H, N, dh].
    """
    q = check_tensor(
        as_tensor(q, "q"), "q", dtypes=(torch.float32, torch.float64, torch.float16, torch.bfloat16), ndim=4
    )
    for name, t in (("k", k), ("v", v)):
        check_tensor(t, name, dtypes=(q.dtype,), ndim=4, device=q.device)
        if t.shape != q.shape:
            raise ValueError(f"{name}: expected the shape of q {tuple(q.shape)}, got {tuple(t.shape)}")
    resolved = OP.resolve(backend, q.device.type)
    if resolved == "torch":
        # SDPA's own autograd (fused CPU flash backward) beats the custom op's written-out backward,
        # which materialises the [N, N] probabilities; the custom op stays for opcheck / torch.compile.
        with nvtx_range("kernel/node_attention"):
            return reference.node_attention(q, k, v)
    if q.dtype != torch.float32:  # the kernels accumulate and dot in fp32 (TF32 when torch allows it)
        raise TypeError(
            f"q: the triton backend of node_attention takes float32, got {str(q.dtype).removeprefix('torch.')}"
        )
    return _attention_op(q, k, v, resolved)[0]
