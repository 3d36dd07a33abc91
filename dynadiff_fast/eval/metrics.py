"""Error metrics on predicted fields: RMSE and SSIM, batched, in torch.

Conventions (the evaluation protocol uses these everywhere):

RMSE   per frame, over channels and space:  rmse = sqrt(mean_{c, x} (pred - true)^2).
       Computed on per-channel *standardised* fields (``EnvDataset`` statistics of the seen
       environments), so numbers are comparable across systems and channels.

SSIM   Wang et al. (2004), per channel, averaged over channels, computed exactly as
       ``skimage.metrics.structural_similarity`` does:
           l = (2 mu_x mu_y + C1) / (mu_x^2 + mu_y^2 + C1),  cs = (2 s_xy + C2) / (s_x^2 + s_y^2 + C2)
           C1 = (K1 R)^2, C2 = (K2 R)^2,  K1 = 0.01, K2 = 0.03,
       local moments from a window, the SSIM map averaged over the points whose window lies fully
       inside the frame (skimage crops (win-1)//2 from each border).
       ``gaussian=True`` (default): 11x11 Gaussian window, sigma 1.5, population covariances
       (skimage ``gaussian_weights=True, use_sample_covariance=False``, the original paper's setting).
       ``gaussian=False``: 7x7 uniform window with sample covariances (skimage's defaults).
       ``data_range`` R: by default the dynamic range ``max - min`` of the *true* field, per frame and
       channel (so SSIM is invariant to the per-channel scale of the data); pass a float to fix it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

K1, K2 = 0.01, 0.03
GAUSS_SIGMA, GAUSS_TRUNCATE = 1.5, 3.5


def _check_pair(pred: torch.Tensor, true: torch.Tensor, min_dim: int) -> None:
    for name, t in (("pred", pred), ("true", true)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
        if t.dim() < min_dim:
            raise ValueError(f"{name}: expected at least {min_dim} dims, got shape {tuple(t.shape)}")
    if pred.shape != true.shape:
        raise ValueError(f"pred and true must have the same shape, got {tuple(pred.shape)} and {tuple(true.shape)}")


def rmse(pred: torch.Tensor, true: torch.Tensor, frame_dims: int = 3) -> torch.Tensor:
    """Per-frame RMSE over the last ``frame_dims`` dims (``[C, H, W]`` -> 3; ODE states ``[C]`` -> 1).

    pred, true: ``[..., *frame]`` -> ``[...]`` float32 (accumulated in float64).
    """
    _check_pair(pred, true, frame_dims)
    if frame_dims < 1:
        raise ValueError(f"frame_dims: expected >= 1, got {frame_dims}")
    d = (pred.double() - true.double()).flatten(-frame_dims)
    return d.square().mean(-1).sqrt().float()


def _window(gaussian: bool, dtype: torch.dtype) -> torch.Tensor:
    """The 2-D window ``[k, k]`` (weights summing to 1)."""
    if gaussian:
        radius = int(GAUSS_TRUNCATE * GAUSS_SIGMA + 0.5)  # scipy.ndimage.gaussian_filter's radius
        x = torch.arange(-radius, radius + 1, dtype=dtype)
        g = torch.exp(-0.5 * (x / GAUSS_SIGMA) ** 2)
        g = g / g.sum()
        return g[:, None] * g[None, :]
    return torch.full((7, 7), 1.0 / 49.0, dtype=dtype)


def ssim(
    pred: torch.Tensor,
    true: torch.Tensor,
    data_range: float | torch.Tensor | None = None,
    gaussian: bool = True,
) -> torch.Tensor:
    """Mean SSIM per frame, averaged over channels.

    pred, true: ``[..., C, H, W]`` -> ``[...]`` float32 (computed in float64).
    data_range: None (``true.amax - true.amin`` per frame and channel), a float, or a tensor
    broadcastable to ``[..., C]``.
    """
    _check_pair(pred, true, 3)
    win = _window(gaussian, torch.float64)
    k = win.shape[-1]
    *lead, c, h, w = true.shape
    if h < k or w < k:
        raise ValueError(f"ssim: frames must be at least {k}x{k} for the {k}x{k} window, got {h}x{w}")
    x = pred.double().reshape(-1, 1, h, w)
    y = true.double().reshape(-1, 1, h, w)
    if data_range is None:
        r = (y.amax(dim=(-2, -1)) - y.amin(dim=(-2, -1))).reshape(-1)
    else:
        r = torch.as_tensor(data_range, dtype=torch.float64)
        if (r <= 0).any():
            raise ValueError(f"data_range: must be > 0, got {data_range}")
        r = r.expand(*lead, c).reshape(-1)
    # A constant true frame has zero range; fall back to 1 so C1, C2 stay positive (no NaN).
    r = torch.where(r > 0, r, torch.ones_like(r))[:, None, None, None]
    kernel = win[None, None]

    def filt(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, kernel)  # "valid": exactly skimage's cropped region

    ux, uy = filt(x), filt(y)
    uxx, uyy, uxy = filt(x * x), filt(y * y), filt(x * y)
    n = k * k
    cov_norm = 1.0 if gaussian else n / (n - 1)
    vx = cov_norm * (uxx - ux * ux)
    vy = cov_norm * (uyy - uy * uy)
    vxy = cov_norm * (uxy - ux * uy)
    c1, c2 = (K1 * r) ** 2, (K2 * r) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return s.mean(dim=(-3, -2, -1)).reshape(*lead, c).mean(-1).float()
