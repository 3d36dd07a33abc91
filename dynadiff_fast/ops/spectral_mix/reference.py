"""Reference spectral mixing: the truth every backend is tested against.

    out[e, b, o, m...] = sum_i x_ft[e, b, i, m...] * weight[e, i, o, m...]

One complex ``I x O`` matrix per expert ``e`` and kept Fourier mode ``m`` (FNO's spectral
convolution, with an expert axis in front).
"""

from __future__ import annotations

import torch


def spectral_mix(x_ft: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """x_ft [E, B, I, *modes], weight [E, I, O, *modes] (complex) -> [E, B, O, *modes]."""
    return torch.einsum("ebi...,eio...->ebo...", x_ft, weight)
