"""Plain-torch multi-head attention over the nodes of each expert: the truth for the Triton kernels.

    o = softmax(q k^T / sqrt(dh)) v        q, k, v, o: [B, H, N, dh] (B experts, H heads, N nodes)

No mask: the weight VAE lets every node of an expert attend to every other node (paper sec. 3.1.2).
"""

from __future__ import annotations

import torch.nn.functional as F


def node_attention(q, k, v):
    return F.scaled_dot_product_attention(q, k, v)


def node_attention_fwd(q, k, v):
    """``(o, lse)`` like the Triton forward; the reference keeps no log-sum-exp (None)."""
    return node_attention(q, k, v).contiguous(), None


def node_attention_math(q, k, v):
    """The same, spelled out (used by the tests to pin down what scaled_dot_product_attention computes)."""
    s = (q @ k.transpose(-1, -2)) / q.shape[-1] ** 0.5
    return s.softmax(-1) @ v


def node_attention_backward(q, k, v, do):
    """(dq, dk, dv) of ``node_attention`` given the output gradient ``do``, written out:
    p = softmax(s), s = q k^T / sqrt(dh);  dv = p^T do;  ds = p (do v^T - rowsum(p * do v^T));
    dq = ds k / sqrt(dh);  dk = ds^T q / sqrt(dh)."""
    scale = q.shape[-1] ** -0.5
    p = ((q @ k.transpose(-1, -2)) * scale).softmax(-1)
    dp = do @ v.transpose(-1, -2)
    ds = p * (dp - (p * dp).sum(-1, keepdim=True))
    return (ds @ k) * scale, (ds.transpose(-1, -2) @ q) * scale, p.transpose(-1, -2) @ do


def node_attention_bwd(q, k, v, o, lse, do):
    """``node_attention_backward`` with the Triton backward's signature (``o`` and ``lse`` unused)."""
    return tuple(g.contiguous() for g in node_attention_backward(q, k, v, do))
