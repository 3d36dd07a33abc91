"""Triton kernels of the ragged per-group projection (no padding: each group is its own GEMM).

Rows of group g are the (expert, node) pairs r in [0, E * n_g): e = r // n_g, n = group_nodes[g] + r % n_g,
and node n's features start at ``node_offset[n]`` in row e of ``values``. A host-built tile table lists,
for every tile, its group (first node, n_g, first weight row, f_g) and its row / feature block, so one
launch covers every group and no tile straddles two groups (the weight differs between them).

    proj:   y[rows, dblk]   = sum_k x[rows, k] W_g[k, dblk]          grid (row tiles, D blocks)
    unproj: out[rows, jblk] = sum_d h[rows, d] W_g[jblk, d]          grid (row x feature tiles,)
    wgrad:  dW_g[jblk, dblk] = sum_rows x[rows, jblk]^T dy[rows, dblk] grid (feature tiles, D blocks)

fp32 accumulation; the dot uses TF32 on GPU only when ``torch.backends.cuda.matmul.allow_tf32`` is set
(the same switch torch's own matmuls obey).
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from dynadiff_fast._backend import triton_interpreter

# Tile table columns.
_N0, _NG, _F0, _FG, _R0, _J0 = range(6)


@triton.jit
def _rows(tile_ptr, t, E, BM: tl.constexpr, r0):
    """(valid, e, n) of the BM rows starting at r0 of tile t's group."""
    n0 = tl.load(tile_ptr + t * 6 + 0)
    ng = tl.load(tile_ptr + t * 6 + 1)
    rows = r0 + tl.arange(0, BM)
    valid = rows < E * ng
    ng_safe = tl.maximum(ng, 1)
    e = (rows // ng_safe).to(tl.int64)
    n = (n0 + rows % ng_safe).to(tl.int64)
    return valid, e, n


@triton.jit
def _proj_kernel(
    x_ptr, w_ptr, b_ptr, off_ptr, tile_ptr, y_ptr,
    E, D, sxe, swk, sye, syn, sbn,
    HAS_BIAS: tl.constexpr, PREC: tl.constexpr, BM: tl.constexpr, BK: tl.constexpr, BD: tl.constexpr,
):  # fmt: skip
    t = tl.program_id(0)
    d = tl.program_id(1) * BD + tl.arange(0, BD)
    f0 = tl.load(tile_ptr + t * 6 + 2)
    fg = tl.load(tile_ptr + t * 6 + 3)
    r0 = tl.load(tile_ptr + t * 6 + 4)
    valid, e, n = _rows(tile_ptr, t, E, BM, r0)
    off = tl.load(off_ptr + n, mask=valid, other=0)
    x_row = x_ptr + e * sxe + off
    dmask = d < D
    acc = tl.zeros((BM, BD), dtype=tl.float32)
    for k0 in range(0, fg, BK):
        k = k0 + tl.arange(0, BK)
        kmask = k < fg
        x = tl.load(x_row[:, None] + k[None, :], mask=valid[:, None] & kmask[None, :], other=0.0)
        w = tl.load(
            w_ptr + (f0 + k)[:, None].to(tl.int64) * swk + d[None, :], mask=kmask[:, None] & dmask[None, :], other=0.0
        )
        acc += tl.dot(x, w, input_precision=PREC)
    omask = valid[:, None] & dmask[None, :]
    if HAS_BIAS:
        acc += tl.load(b_ptr + n[:, None] * sbn + d[None, :], mask=omask, other=0.0)
    tl.store(y_ptr + e[:, None] * sye + n[:, None] * syn + d[None, :], acc, mask=omask)


@triton.jit
def _unproj_kernel(
    h_ptr, w_ptr, b_ptr, off_ptr, tile_ptr, out_ptr,
    E, D, she, shn, swk, soe,
    HAS_BIAS: tl.constexpr, PREC: tl.constexpr, BM: tl.constexpr, BJ: tl.constexpr, BD: tl.constexpr,
):  # fmt: skip
    t = tl.program_id(0)
    f0 = tl.load(tile_ptr + t * 6 + 2)
    fg = tl.load(tile_ptr + t * 6 + 3)
    r0 = tl.load(tile_ptr + t * 6 + 4)
    j = tl.load(tile_ptr + t * 6 + 5) + tl.arange(0, BJ)
    valid, e, n = _rows(tile_ptr, t, E, BM, r0)
    jmask = j < fg
    w_rows = w_ptr + (f0 + j).to(tl.int64) * swk
    acc = tl.zeros((BM, BJ), dtype=tl.float32)
    for d0 in range(0, D, BD):
        d = d0 + tl.arange(0, BD)
        dmask = d < D
        h = tl.load(
            h_ptr + e[:, None] * she + n[:, None] * shn + d[None, :], mask=valid[:, None] & dmask[None, :], other=0.0
        )
        wt = tl.load(w_rows[None, :] + d[:, None], mask=dmask[:, None] & jmask[None, :], other=0.0)
        acc += tl.dot(h, wt, input_precision=PREC)
    if HAS_BIAS:
        acc += tl.load(b_ptr + f0 + j, mask=jmask, other=0.0)[None, :]
    off = tl.load(off_ptr + n, mask=valid, other=0)
    tl.store(out_ptr + e[:, None] * soe + off[:, None] + j[None, :], acc, mask=valid[:, None] & jmask[None, :])


@triton.jit
def _wgrad_kernel(
    x_ptr, dy_ptr, off_ptr, tile_ptr, dw_ptr,
    E, D, sxe, sye, syn, swk,
    PREC: tl.constexpr, BM: tl.constexpr, BJ: tl.constexpr, BD: tl.constexpr,
):  # fmt: skip
    t = tl.program_id(0)
    d = tl.program_id(1) * BD + tl.arange(0, BD)
    ng = tl.load(tile_ptr + t * 6 + 1)
    f0 = tl.load(tile_ptr + t * 6 + 2)
    fg = tl.load(tile_ptr + t * 6 + 3)
    j = tl.load(tile_ptr + t * 6 + 5) + tl.arange(0, BJ)
    jmask = j < fg
    dmask = d < D
    acc = tl.zeros((BJ, BD), dtype=tl.float32)
    for r0 in range(0, E * ng, BM):
        valid, e, n = _rows(tile_ptr, t, E, BM, r0)
        off = tl.load(off_ptr + n, mask=valid, other=0)
        xt = tl.load(x_ptr + (e * sxe + off)[None, :] + j[:, None], mask=jmask[:, None] & valid[None, :], other=0.0)
        dy = tl.load(
            dy_ptr + e[:, None] * sye + n[:, None] * syn + d[None, :], mask=valid[:, None] & dmask[None, :], other=0.0
        )
        acc += tl.dot(xt, dy, input_precision=PREC)
    tl.store(dw_ptr + (f0 + j)[:, None].to(tl.int64) * swk + d[None, :], acc, mask=jmask[:, None] & dmask[None, :])


def _blocks(device: torch.device) -> dict[str, int]:
    # The interpreter runs ~1 ms per program instance: small tiles keep the tests' grids tiny anyway,
    # and 16 is tl.dot's minimum. On GPU: 64-row tiles, 64-wide outputs, 32-deep reductions.
    if device.type != "cuda" or triton_interpreter():
        return {"BM": 16, "BK": 16, "BJ": 16, "BD": 16}
    return {"BM": 64, "BK": 32, "BJ": 64, "BD": 64}


def _precision(device: torch.device) -> str:
    return "tf32" if device.type == "cuda" and torch.backends.cuda.matmul.allow_tf32 else "ieee"


@functools.lru_cache(maxsize=64)
def _tiles(group_nodes: tuple, group_feats: tuple, E: int, BM: int, BJ: int, kind: str, device: str):
    """int32 [T, 6] tile table (n0, n_g, f0, f_g, row0, j0); ``kind`` = rows | rows_feats | feats."""
    out = []
    for g in range(len(group_nodes) - 1):
        n0, ng = group_nodes[g], group_nodes[g + 1] - group_nodes[g]
        f0, fg = group_feats[g], group_feats[g + 1] - group_feats[g]
        if ng == 0 or fg == 0:
            continue
        row_starts = range(0, E * ng, BM) if kind != "feats" else (0,)
        feat_starts = range(0, fg, BJ) if kind != "rows" else (0,)
        out += [(n0, ng, f0, fg, r0, j0) for r0 in row_starts for j0 in feat_starts]
    return torch.tensor(out, dtype=torch.int32, device=device).reshape(-1, 6)


def _check_rows(t: torch.Tensor) -> torch.Tensor:
    # Kernels index rows with explicit strides but need unit stride along the last axis.
    return t if t.stride(-1) == 1 else t.contiguous()


def ragged_proj(values, weight, node_offset, group_nodes, group_feats, bias=None, out=None):
    E, D = values.shape[0], weight.shape[1]
    values, weight = _check_rows(values), _check_rows(weight)
    b = _blocks(values.device)
    tiles = _tiles(tuple(group_nodes), tuple(group_feats), E, b["BM"], b["BJ"], "rows", str(values.device))
    y = values.new_empty(E, group_nodes[-1], D) if out is None else out
    if bias is not None:
        bias = _check_rows(bias)
    if tiles.shape[0] and D:
        _proj_kernel[(tiles.shape[0], triton.cdiv(D, b["BD"]))](
            values, weight, bias if bias is not None else weight, node_offset, tiles, y,
            E, D, values.stride(0), weight.stride(0), y.stride(0), y.stride(1), bias.stride(0) if bias is not None else 0,
            HAS_BIAS=bias is not None, PREC=_precision(values.device), BM=b["BM"], BK=b["BK"], BD=b["BD"],
        )  # fmt: skip
    return y


def ragged_unproj(h, weight, node_offset, group_nodes, group_feats, num_values, bias=None, out=None):
    E, D = h.shape[0], weight.shape[1]
    h, weight = _check_rows(h), _check_rows(weight)
    b = _blocks(h.device)
    covered = sum((group_nodes[g + 1] - group_nodes[g]) * (group_feats[g + 1] - group_feats[g])
                  for g in range(len(group_nodes) - 1))  # fmt: skip
    if out is None:  # positions no node covers must read 0; a fully covered layout needs no memset
        out = h.new_empty(E, num_values) if covered == num_values else h.new_zeros(E, num_values)
    tiles = _tiles(tuple(group_nodes), tuple(group_feats), E, b["BM"], b["BJ"], "rows_feats", str(h.device))
    if tiles.shape[0]:
        _unproj_kernel[(tiles.shape[0],)](
            h, weight, bias if bias is not None else weight, node_offset, tiles, out,
            E, D, h.stride(0), h.stride(1), weight.stride(0), out.stride(0),
            HAS_BIAS=bias is not None, PREC=_precision(h.device), BM=b["BM"], BJ=b["BJ"], BD=b["BD"],
        )  # fmt: skip
    return out


def ragged_wgrad(values, dy, node_offset, group_nodes, group_feats, out=None):
    E, D = values.shape[0], dy.shape[2]
    values, dy = _check_rows(values), _check_rows(dy)
    b = _blocks(values.device)
    dw = values.new_zeros(group_feats[-1], D) if out is None else out  # zeros: empty groups get no tile
    tiles = _tiles(tuple(group_nodes), tuple(group_feats), E, b["BM"], b["BJ"], "feats", str(values.device))
    if tiles.shape[0] and D:
        _wgrad_kernel[(tiles.shape[0], triton.cdiv(D, b["BD"]))](
            values, dy, node_offset, tiles, dw,
            E, D, values.stride(0), dy.stride(0), dy.stride(1), dw.stride(0),
            PREC=_precision(values.device), BM=b["BM"], BJ=b["BJ"], BD=b["BD"],
        )  # fmt: skip
    return dw
