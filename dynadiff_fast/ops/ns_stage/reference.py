"""Plain-torch reference of the pseudo-spectral stage ops (the truth every backend is tested against).

Lawson (integrating-factor) RK4 for ``d v/dt = L v + N(v)`` in Fourier space, ``E = exp(L dt/2)``,
with the nonlinear term assembled from the FFT of the physical-space product ``q``:
``N = mask * q_hat + forcing``. Stage ``s`` consumes ``N_s`` and returns the running sum and the
input of the next stage:

    s=1: acc = E^2 (v + dt/6 N1)          next = E (v + dt/2 N1)
    s=2: acc = acc + dt/3 E N2            next = E v + dt/2 N2
    s=3: acc = acc + dt/3 E N3            next = E^2 v + dt E N3
    s=4: acc = acc + dt/6 N4  (= v')      next = acc

With ``velocity=True`` (vorticity equations, one field) ``next`` is replaced by the spectra the
next stage needs in physical space: ``(u, v, d omega/dx, d omega/dy)`` of the vorticity ``next``,
from the Poisson solve ``lap psi = -omega``, ``u = d psi/dy``, ``v = -d psi/dx``.

Output layouts of ``next`` (fields ``c`` = the F stage inputs, or the 4 velocity fields):

    "half":   rfft2 half spectra ``[n, c, H, W//2+1]``; ``irfft2`` gives the fields.
    "packed": pairs of fields ``(a, b)`` as one full spectrum ``conj(a_hat + i b_hat) / (H W)``,
              ``[n, c/2, H, W]``, so that the *forward* ``fft2`` gives ``a - i b`` in physical space.
              Two real inverse transforms become one forward complex transform, which is what
              CPU FFT libraries do fastest (MKL's c2r inverse is several times slower than its
              forward transforms on these batched sizes).
"""

from __future__ import annotations

import torch


def velocity_spectra(w_hat: torch.Tensor, kx: torch.Tensor, ky: torch.Tensor) -> torch.Tensor:
    """``w_hat [n, 1, H, Wr]`` -> ``[n, 4, H, Wr]`` spectra of ``(u, v, w_x, w_y)``.

    ``kx [Wr]``, ``ky [H]``: angular wavenumbers of the rfft2 half spectrum.
    """
    kx, ky = kx[None, None, None, :], ky[None, None, :, None]
    k2 = kx * kx + ky * ky
    inv_k2 = torch.where(k2 > 0, 1.0 / torch.where(k2 > 0, k2, 1.0), 0.0)
    psi = w_hat * inv_k2
    return torch.cat([1j * ky * psi, -1j * kx * psi, 1j * kx * w_hat, 1j * ky * w_hat], dim=1)


def hermitian_full(half: torch.Tensor, W: int) -> torch.Tensor:
    """rfft2 half spectra ``[..., H, W//2+1]`` -> full spectra ``[..., H, W]`` (X(-k) = conj X(k))."""
    H = half.shape[-2]
    neg_h = (-torch.arange(H, device=half.device)) % H
    neg_w = W - torch.arange(half.shape[-1], W, device=half.device)
    return torch.cat([half, half[..., neg_h, :][..., neg_w].conj_physical()], dim=-1)


def pack(half: torch.Tensor, W: int) -> torch.Tensor:
    """Half spectra ``[n, 2m, H, Wr]`` -> packed ``[n, m, H, W]``: ``conj(a + i b) / (H W)`` per pair."""
    full = hermitian_full(half, W)
    return (full[:, 0::2] + 1j * full[:, 1::2]).conj_physical() / (full.shape[-2] * W)


def ns_stage(
    stage: int,
    nonlin_hat: torch.Tensor,
    state_hat: torch.Tensor,
    acc: torch.Tensor,
    half_decay: torch.Tensor,
    kx: torch.Tensor,
    ky: torch.Tensor,
    mask: torch.Tensor,
    dt: float,
    forcing: torch.Tensor | None,
    velocity: bool,
    layout: str = "half",
    width: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One Lawson-RK4 stage; see the module docstring. ``width``: the physical W (packed layout).

    Shapes: nonlin_hat, state_hat, acc complex ``[n, F, H, Wr]`` (acc unused at stage 1);
    half_decay real ``[n or 1, 1, H, Wr]``; forcing complex ``[n or 1, F, H, Wr]`` or None;
    kx [Wr], ky [H], mask [H, Wr] real. Returns ``(acc_out [n, F, H, Wr], next)`` with next
    ``[n, C, H, Wr]`` ("half") or ``[n, C/2, H, W]`` ("packed"), C = 4 when ``velocity`` (F must
    be 1) else F.
    """
    E, v = half_decay, state_hat
    N = mask * nonlin_hat
    if forcing is not None:
        N = N + forcing
    if stage == 1:
        acc_out = E * E * (v + dt / 6 * N)
        nxt = E * (v + dt / 2 * N)
    elif stage == 2:
        acc_out = acc + dt / 3 * E * N
        nxt = E * v + dt / 2 * N
    elif stage == 3:
        acc_out = acc + dt / 3 * E * N
        nxt = E * E * v + dt * E * N
    elif stage == 4:
        acc_out = acc + dt / 6 * N
        nxt = acc_out
    else:
        raise ValueError(f"stage: must be 1, 2, 3 or 4, got {stage}")
    if velocity:
        nxt = velocity_spectra(nxt, kx, ky)
    if layout == "packed":
        nxt = pack(nxt, width)
    return acc_out, nxt


def ns_advection(fields: torch.Tensor) -> torch.Tensor:
    """``-(u w_x + v w_y)`` ``[n, 1, H, W]`` from physical ``(u, v, w_x, w_y)``: real ``[n, 4, H, W]``, or
    complex ``[n, 2, H, W]`` = ``(u - i v, w_x - i w_y)`` (``fft2`` of the packed layout)."""
    if fields.is_complex():
        a, b = fields.unbind(1)
        return -(a.real * b.real + a.imag * b.imag).unsqueeze(1)
    u, v, wx, wy = fields.unbind(1)
    return -(u * wx + v * wy).unsqueeze(1)
