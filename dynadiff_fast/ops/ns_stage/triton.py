"""Triton backend (GPUs; tested on tiny grids under ``TRITON_INTERPRET=1``).

Complex tensors are passed as their real views (interleaved re/im): Triton has no complex dtype.
One program handles ``BLOCK`` consecutive modes of the flattened ``[n, F, H, Wr]`` spectrum.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK = 256


@triton.jit
def _ns_stage_kernel(
    q_ptr, v_ptr, acc_ptr, e_ptr, kx_ptr, ky_ptr, m_ptr, f_ptr, acc_out_ptr, out_ptr,
    dt_ptr, total, F, H, Wr, W, e_bstride, f_bstride,
    STAGE: tl.constexpr, VELOCITY: tl.constexpr, HAS_FORCING: tl.constexpr, PACKED: tl.constexpr,
    BLOCK: tl.constexpr,
):  # fmt: skip
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    ok = offs < total
    dt = tl.load(dt_ptr)  # a tensor, not a scalar argument: Triton would round a Python float to fp32
    plane = H * Wr
    hw = offs % plane
    h = hw // Wr
    w = hw % Wr
    b = offs // plane
    row = b // F
    f = b % F
    E = tl.load(e_ptr + row * e_bstride + hw, mask=ok, other=0.0)
    m = tl.load(m_ptr + hw, mask=ok, other=0.0)
    nr = m * tl.load(q_ptr + 2 * offs, mask=ok, other=0.0)
    ni = m * tl.load(q_ptr + 2 * offs + 1, mask=ok, other=0.0)
    if HAS_FORCING:
        fo = row * f_bstride + f * plane + hw
        nr += tl.load(f_ptr + 2 * fo, mask=ok, other=0.0)
        ni += tl.load(f_ptr + 2 * fo + 1, mask=ok, other=0.0)
    sr = tl.load(v_ptr + 2 * offs, mask=ok, other=0.0)
    si = tl.load(v_ptr + 2 * offs + 1, mask=ok, other=0.0)
    if STAGE == 1:
        ar = E * E * (sr + dt / 6 * nr)
        ai = E * E * (si + dt / 6 * ni)
        xr = E * (sr + dt / 2 * nr)
        xi = E * (si + dt / 2 * ni)
    else:
        ar = tl.load(acc_ptr + 2 * offs, mask=ok, other=0.0)
        ai = tl.load(acc_ptr + 2 * offs + 1, mask=ok, other=0.0)
        if STAGE == 4:
            ar += dt / 6 * nr
            ai += dt / 6 * ni
            xr = ar
            xi = ai
        else:
            ar += dt / 3 * E * nr
            ai += dt / 3 * E * ni
            if STAGE == 2:
                xr = E * sr + dt / 2 * nr
                xi = E * si + dt / 2 * ni
            else:
                xr = E * (E * sr + dt * nr)
                xi = E * (E * si + dt * ni)
    _store(acc_out_ptr, offs, ar, ai, ok)
    if VELOCITY:
        kx = tl.load(kx_ptr + w, mask=ok, other=0.0)
        ky = tl.load(ky_ptr + h, mask=ok, other=0.0)
        k2 = kx * kx + ky * ky
        inv = tl.where(k2 > 0, 1.0 / tl.where(k2 > 0, k2, 1.0), 0.0)
        pr = xr * inv
        pi = xi * inv
        if PACKED:  # (u + i v) and (w_x + i w_y) as conj(.) / (H W) at +k and -k
            _store_pair(out_ptr, row * 2, h, w, H, W, -ky * pi, ky * pr, kx * pi, -kx * pr, ok)
            _store_pair(out_ptr, row * 2 + 1, h, w, H, W, -kx * xi, kx * xr, -ky * xi, ky * xr, ok)
        else:
            o = row * 4 * plane + hw
            _store(out_ptr, o, -ky * pi, ky * pr, ok)
            _store(out_ptr, o + plane, kx * pi, -kx * pr, ok)
            _store(out_ptr, o + 2 * plane, -kx * xi, kx * xr, ok)
            _store(out_ptr, o + 3 * plane, -ky * xi, ky * xr, ok)
    else:
        _store(out_ptr, offs, xr, xi, ok)


@triton.jit
def _store(ptr, i, re, im, ok):
    tl.store(ptr + 2 * i, re, mask=ok)
    tl.store(ptr + 2 * i + 1, im, mask=ok)


@triton.jit
def _store_pair(ptr, plane_idx, h, w, H, W, ar, ai, br, bi, ok):
    """Packed pair (a, b) of mode (h, w): conj(a + i b) / (H W) at +k, (a - i b) / (H W) at -k."""
    hw = H * W  # divide (not multiply by a float32 1/(H W)) to keep float64 exact
    base = plane_idx * hw
    _store(ptr, base + h * W + w, (ar - bi) / hw, -(ai + br) / hw, ok)
    mirror = ok & (w > 0) & (2 * w < W)
    _store(ptr, base + ((H - h) % H) * W + (W - w), (ar + bi) / hw, (ai - br) / hw, mirror)


@triton.jit
def _ns_advection_kernel(f_ptr, q_ptr, total, P, PACKED: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    ok = offs < total
    if PACKED:  # complex (u - i v, w_x - i w_y), interleaved
        base = (offs // P) * 4 * P + 2 * (offs % P)
        u = tl.load(f_ptr + base, mask=ok, other=0.0)
        v = tl.load(f_ptr + base + 1, mask=ok, other=0.0)
        wx = tl.load(f_ptr + base + 2 * P, mask=ok, other=0.0)
        wy = tl.load(f_ptr + base + 2 * P + 1, mask=ok, other=0.0)
    else:
        base = (offs // P) * 4 * P + offs % P
        u = tl.load(f_ptr + base, mask=ok, other=0.0)
        v = tl.load(f_ptr + base + P, mask=ok, other=0.0)
        wx = tl.load(f_ptr + base + 2 * P, mask=ok, other=0.0)
        wy = tl.load(f_ptr + base + 3 * P, mask=ok, other=0.0)
    tl.store(q_ptr + offs, -(u * wx + v * wy), mask=ok)


def ns_stage(stage, nonlin_hat, state_hat, acc, half_decay, kx, ky, mask, dt, forcing, velocity, layout, width):
    n, F, H, Wr = nonlin_hat.shape
    if layout == "packed" and not velocity:
        raise ValueError("layout: the triton backend packs the velocity fields only (velocity=True)")
    acc_out = torch.empty_like(nonlin_hat)
    out = nonlin_hat.new_empty((n, 2, H, width) if layout == "packed" else (n, 4 if velocity else F, H, Wr))
    total = n * F * H * Wr
    real = torch.view_as_real
    f = real(forcing) if forcing is not None else kx  # any pointer when HAS_FORCING is False
    f_bstride = 0 if forcing is None or forcing.shape[0] == 1 else F * H * Wr
    e_bstride = 0 if half_decay.shape[0] == 1 else H * Wr
    _ns_stage_kernel[(triton.cdiv(total, BLOCK),)](
        real(nonlin_hat), real(state_hat), real(acc), half_decay, kx, ky, mask, f, real(acc_out), real(out),
        kx.new_full((1,), dt), total, F, H, Wr, width, e_bstride, f_bstride,
        STAGE=stage, VELOCITY=velocity, HAS_FORCING=forcing is not None, PACKED=layout == "packed", BLOCK=BLOCK,
    )  # fmt: skip
    return acc_out, out


def ns_advection(fields):
    n, _, H, W = fields.shape
    packed = fields.is_complex()
    q = torch.empty((n, 1, H, W), dtype=fields.real.dtype, device=fields.device)
    total = n * H * W
    src = torch.view_as_real(fields) if packed else fields
    _ns_advection_kernel[(triton.cdiv(total, BLOCK),)](src, q, total, H * W, PACKED=packed, BLOCK=BLOCK)
    return q
