"""Flash-style attention over the nodes of each expert (no mask: every node sees every node).

Forward (online softmax, in base 2): for a block of BM queries, stream BN keys at a time,
    s = q k^T * scale * log2(e);  m' = max(m, rowmax s);  p = 2^(s - m');  l = l 2^(m - m') + rowsum p
    acc = acc 2^(m - m') + p v;   o = acc / l;   lse = m + log2 l   (kept for the backward)
so the [N, N] score matrix never exists. Backward (FlashAttention-2): delta_i = sum_d o_i do_i, then
    p = 2^(s - lse);  dv += p^T do;  ds = p (do v^T - delta);  dk += scale ds^T q;  dq += scale ds k
in two kernels (one owning a key block and looping over queries, one owning a query block), so no
atomics are needed. fp32 accumulation; TF32 dots on GPU when torch allows TF32 matmuls.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from dynadiff_fast._backend import triton_interpreter

LOG2E = 1.4426950408889634


@triton.jit
def _load_block(base, rows, N, sn, DH: tl.constexpr, BD: tl.constexpr):
    cols = tl.arange(0, BD)
    mask = (rows < N)[:, None] & (cols < DH)[None, :]
    return tl.load(base + rows[:, None] * sn + cols[None, :], mask=mask, other=0.0)


@triton.jit
def _fwd_kernel(
    q_ptr, k_ptr, v_ptr, o_ptr, lse_ptr,
    sqb, sqh, sqn, sob, soh, son,
    H, N, qk_scale,
    DH: tl.constexpr, PREC: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BD: tl.constexpr,
):  # fmt: skip
    bh = tl.program_id(1)
    b, h = bh // H, bh % H
    qkv_off = b.to(tl.int64) * sqb + h * sqh
    rows = tl.program_id(0) * BM + tl.arange(0, BM)
    q = _load_block(q_ptr + qkv_off, rows, N, sqn, DH, BD)
    m = tl.full((BM,), float("-inf"), tl.float32)
    l = tl.zeros((BM,), tl.float32)
    acc = tl.zeros((BM, BD), tl.float32)
    for n0 in range(0, N, BN):
        cols = n0 + tl.arange(0, BN)
        k = _load_block(k_ptr + qkv_off, cols, N, sqn, DH, BD)
        v = _load_block(v_ptr + qkv_off, cols, N, sqn, DH, BD)
        s = tl.dot(q, tl.trans(k), input_precision=PREC) * qk_scale
        s = tl.where((cols < N)[None, :], s, float("-inf"))
        m_new = tl.maximum(m, tl.max(s, 1))
        p = tl.exp2(s - m_new[:, None])
        alpha = tl.exp2(m - m_new)
        l = l * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + tl.dot(p, v, input_precision=PREC)
        m = m_new
    acc = acc / l[:, None]
    cols = tl.arange(0, BD)
    o_off = b.to(tl.int64) * sob + h * soh
    tl.store(o_ptr + o_off + rows[:, None] * son + cols[None, :], acc, mask=(rows < N)[:, None] & (cols < DH)[None, :])
    tl.store(lse_ptr + bh.to(tl.int64) * N + rows, m + tl.log2(l), mask=rows < N)


@triton.jit
def _query_block(q_ptr, do_ptr, lse_ptr, delta_ptr, qkv_off, o_off, bh, rows, N, sqn, son,
                 DH: tl.constexpr, BD: tl.constexpr):  # fmt: skip
    """q, do [BM, BD] and lse, delta [BM] of the query rows ``rows`` (zeros past N)."""
    rmask = rows < N
    q = _load_block(q_ptr + qkv_off, rows, N, sqn, DH, BD)
    do = _load_block(do_ptr + o_off, rows, N, son, DH, BD)
    lse = tl.load(lse_ptr + bh.to(tl.int64) * N + rows, mask=rmask, other=0.0)
    delta = tl.load(delta_ptr + bh.to(tl.int64) * N + rows, mask=rmask, other=0.0)
    return q, do, lse, delta


@triton.jit
def _probs_and_dscores(q, k, v, do, lse, delta, rows, cols, N, qk_scale, PREC: tl.constexpr):
    """p = the tile's softmax probabilities (0 outside N x N) and ds = p (do v^T - delta) = dL/ds."""
    s = tl.dot(q, tl.trans(k), input_precision=PREC) * qk_scale
    p = tl.where((rows < N)[:, None] & (cols < N)[None, :], tl.exp2(s - lse[:, None]), 0.0)
    dp = tl.dot(do, tl.trans(v), input_precision=PREC)
    return p, p * (dp - delta[:, None])


@triton.jit
def _bwd_dkdv_kernel(
    q_ptr, k_ptr, v_ptr, do_ptr, lse_ptr, delta_ptr, dk_ptr, dv_ptr,
    sqb, sqh, sqn, sob, soh, son,
    H, N, scale, qk_scale,
    DH: tl.constexpr, PREC: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BD: tl.constexpr,
):  # fmt: skip
    bh = tl.program_id(1)
    b, h = bh // H, bh % H
    qkv_off = b.to(tl.int64) * sqb + h * sqh
    o_off = b.to(tl.int64) * sob + h * soh  # do, dk, dv share the contiguous output layout
    cols = tl.program_id(0) * BN + tl.arange(0, BN)
    k = _load_block(k_ptr + qkv_off, cols, N, sqn, DH, BD)
    v = _load_block(v_ptr + qkv_off, cols, N, sqn, DH, BD)
    dk = tl.zeros((BN, BD), tl.float32)
    dv = tl.zeros((BN, BD), tl.float32)
    for m0 in range(0, N, BM):
        rows = m0 + tl.arange(0, BM)
        q, do, lse, delta = _query_block(
            q_ptr, do_ptr, lse_ptr, delta_ptr, qkv_off, o_off, bh, rows, N, sqn, son, DH, BD
        )
        p, ds = _probs_and_dscores(q, k, v, do, lse, delta, rows, cols, N, qk_scale, PREC)
        dv += tl.dot(tl.trans(p), do, input_precision=PREC)
        dk += tl.dot(tl.trans(ds), q, input_precision=PREC)
    dcols = tl.arange(0, BD)
    mask = (cols < N)[:, None] & (dcols < DH)[None, :]
    ptrs = o_off + cols[:, None] * son + dcols[None, :]
    tl.store(dk_ptr + ptrs, dk * scale, mask=mask)
    tl.store(dv_ptr + ptrs, dv, mask=mask)


@triton.jit
def _bwd_dq_kernel(
    q_ptr, k_ptr, v_ptr, do_ptr, lse_ptr, delta_ptr, dq_ptr,
    sqb, sqh, sqn, sob, soh, son,
    H, N, scale, qk_scale,
    DH: tl.constexpr, PREC: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BD: tl.constexpr,
):  # fmt: skip
    bh = tl.program_id(1)
    b, h = bh // H, bh % H
    qkv_off = b.to(tl.int64) * sqb + h * sqh
    o_off = b.to(tl.int64) * sob + h * soh
    rows = tl.program_id(0) * BM + tl.arange(0, BM)
    q, do, lse, delta = _query_block(q_ptr, do_ptr, lse_ptr, delta_ptr, qkv_off, o_off, bh, rows, N, sqn, son, DH, BD)
    dq = tl.zeros((BM, BD), tl.float32)
    for n0 in range(0, N, BN):
        cols = n0 + tl.arange(0, BN)
        k = _load_block(k_ptr + qkv_off, cols, N, sqn, DH, BD)
        v = _load_block(v_ptr + qkv_off, cols, N, sqn, DH, BD)
        _, ds = _probs_and_dscores(q, k, v, do, lse, delta, rows, cols, N, qk_scale, PREC)
        dq += tl.dot(ds, k, input_precision=PREC)
    dcols = tl.arange(0, BD)
    tl.store(
        dq_ptr + o_off + rows[:, None] * son + dcols[None, :],
        dq * scale,
        mask=(rows < N)[:, None] & (dcols < DH)[None, :],
    )


def _config(q: torch.Tensor) -> dict:
    dh = q.shape[-1]
    bd = max(16, triton.next_power_of_2(dh))
    if q.device.type != "cuda" or triton_interpreter():
        bm = bn = 16
    else:  # keep the [BM, BD] fp32 tiles within registers for head dims up to 128
        bm, bn = (64, 64) if bd <= 64 else (64, 32)
    prec = "tf32" if q.device.type == "cuda" and torch.backends.cuda.matmul.allow_tf32 else "ieee"
    return {"DH": dh, "PREC": prec, "BM": bm, "BN": bn, "BD": bd}


def _same_strides(q, k, v):
    """q, k, v views of one packed qkv tensor share strides; otherwise make all three contiguous."""
    if q.stride() == k.stride() == v.stride() and q.stride(-1) == 1:
        return q, k, v
    return q.contiguous(), k.contiguous(), v.contiguous()


def node_attention_fwd(q, k, v, out=None):
    """q, k, v [B, H, N, dh] -> (o [B, H, N, dh] contiguous, lse [B, H, N] in log2 units)."""
    q, k, v = _same_strides(q, k, v)
    B, H, N, dh = q.shape
    cfg = _config(q)
    o = torch.empty(B, H, N, dh, dtype=q.dtype, device=q.device) if out is None else out
    lse = torch.empty(B, H, N, dtype=torch.float32, device=q.device)
    if B * H * N:
        grid = (triton.cdiv(N, cfg["BM"]), B * H)
        _fwd_kernel[grid](
            q, k, v, o, lse, q.stride(0), q.stride(1), q.stride(2), o.stride(0), o.stride(1), o.stride(2),
            H, N, LOG2E / math.sqrt(dh), **cfg,
        )  # fmt: skip
    return o, lse


def node_attention_bwd(q, k, v, o, lse, do):
    """Gradients (dq, dk, dv), each [B, H, N, dh] contiguous."""
    q, k, v = _same_strides(q, k, v)
    do = do.contiguous()
    B, H, N, dh = q.shape
    cfg = _config(q)
    delta = (o.float() * do.float()).sum(-1).contiguous()  # [B, H, N]
    dq, dk, dv = (torch.empty(B, H, N, dh, dtype=q.dtype, device=q.device) for _ in range(3))
    if B * H * N:
        scale = 1.0 / math.sqrt(dh)
        args = (
            q.stride(0),
            q.stride(1),
            q.stride(2),
            do.stride(0),
            do.stride(1),
            do.stride(2),
            H,
            N,
            scale,
            scale * LOG2E,
        )
        _bwd_dkdv_kernel[(triton.cdiv(N, cfg["BN"]), B * H)](q, k, v, do, lse, delta, dk, dv, *args, **cfg)
        _bwd_dq_kernel[(triton.cdiv(N, cfg["BM"]), B * H)](q, k, v, do, lse, delta, dq, *args, **cfg)
    return dq, dk, dv
