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

Ensemble metrics (M members x_1..x_M of a forecast, observation y, per point; members along ``dim``):

CRPS   the fair (unbiased) estimator of the continuous ranked probability score (Ferro 2014):
           crps = mean_i |x_i - y| - sum_{i,j} |x_i - x_j| / (2 M (M - 1)),      M >= 2;
       its expectation is the CRPS of the distribution the members are drawn from, whatever M (the plain
       empirical-CDF estimator, with 2 M^2 in the denominator, is biased high by E|x - x'| / (2M)).
       ``crps_ensemble`` sums the pairs from the sorted members, sum_{i,j} |x_i - x_j| = 2 sum_k (2k - M - 1) x_(k),
       in O(M log M) and no [M, M] buffer; ``crps_ensemble_reference`` sums the pairs themselves.

Spread-skill   per frame, spread^2 = mean over the frame of the members' unbiased variance, error^2 = mean over
       the frame of (ensemble mean - y)^2 (``ensemble_spread_error``); over any set of frames
           spread_skill = sqrt((M + 1) / M) sqrt(mean spread^2 / mean error^2),
       which is 1 for a calibrated ensemble (members and y exchangeable: E error^2 = (1 + 1/M) E spread^2),
       below 1 for an over-confident (under-dispersed) one (Fortin et al. 2014).

Rank / PIT   the rank of y among the members, r = #{x_i < y} in 0..M; ties (#{x_i = y} = t) spread r uniformly
       over #{x_i < y} .. #{x_i < y} + t. The (randomised) PIT u is uniform on [r, r + 1] / (M + 1), so u is
       uniform on [0, 1] for a calibrated ensemble of any size. ``rank_histogram``: frequencies of r ``[M+1]``
       (flat when calibrated, U-shaped when under-dispersed). ``pit_coverage``: per point, the probability that
       u lies in the central interval [(1 - level) / 2, (1 + level) / 2], i.e. the coverage of the ensemble's
       central ``level`` interval; its mean is ``level`` exactly for a calibrated ensemble (below: too narrow).
       Each has a plain per-point reference (``*_reference``, NumPy, for the tests).
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


# ---------------------------------------------------------------------------------------------------------
# Ensemble metrics
# ---------------------------------------------------------------------------------------------------------
def _ensemble(ens: torch.Tensor, obs: torch.Tensor, dim: int, min_members: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate; members first, float64: ``(x [M, *point], y [*point])``."""
    for name, t in (("ens", ens), ("obs", obs)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if not -ens.dim() <= dim < ens.dim():
        raise ValueError(
            f"dim: expected -{ens.dim()} <= dim < {ens.dim()} for ens of shape {tuple(ens.shape)}, got {dim}"
        )
    x = ens.movedim(dim, 0)
    if x.shape[1:] != obs.shape:
        raise ValueError(
            f"obs: shape {tuple(obs.shape)} must be ens's {tuple(ens.shape)} without the member axis dim={dim}"
        )
    if x.shape[0] < min_members:
        raise ValueError(f"ens: needs at least {min_members} members along dim={dim}, got {x.shape[0]}")
    return x.double(), obs.double()


def crps_ensemble(ens: torch.Tensor, obs: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """Fair CRPS per point (module docstring), from the sorted members.

    ens: members along ``dim`` (M >= 2); obs: ``ens``'s shape without ``dim`` -> that shape, float32
    (computed in float64).
    """
    x, y = _ensemble(ens, obs, dim, 2)
    m = x.shape[0]
    k = torch.arange(1, m + 1, dtype=torch.float64, device=x.device).view(-1, *[1] * y.dim())
    pairs = ((2 * k - m - 1) * x.sort(dim=0).values).sum(0)  # = sum_{i,j} |x_i - x_j| / 2
    return ((x - y).abs().mean(0) - pairs / (m * (m - 1))).float()


def crps_ensemble_reference(ens: torch.Tensor, obs: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """``crps_ensemble`` by its definition: every pair of members ([M, M, *point] buffer)."""
    x, y = _ensemble(ens, obs, dim, 2)
    m = x.shape[0]
    pairs = (x[:, None] - x[None, :]).abs().sum((0, 1))
    return ((x - y).abs().mean(0) - pairs / (2 * m * (m - 1))).float()


def ensemble_spread_error(
    ens: torch.Tensor, obs: torch.Tensor, dim: int = 0, frame_dims: int = 3
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per frame (the last ``frame_dims`` dims of ``obs``): ``(spread^2, error^2)`` float64, the mean over the
    frame of the members' unbiased variance and of the squared error of the ensemble mean (M >= 2)."""
    x, y = _ensemble(ens, obs, dim, 2)
    if not 1 <= frame_dims <= y.dim():
        raise ValueError(f"frame_dims: expected 1..{y.dim()} for obs of shape {tuple(obs.shape)}, got {frame_dims}")
    spread2 = x.var(0, correction=1).flatten(-frame_dims).mean(-1)
    error2 = (x.mean(0) - y).square().flatten(-frame_dims).mean(-1)
    return spread2, error2


def spread_skill(spread2: torch.Tensor, error2: torch.Tensor, members: int, dim=None) -> torch.Tensor:
    """``sqrt((M + 1) / M) sqrt(mean spread^2 / mean error^2)``, the means over ``dim`` (None: all dims);
    1 for a calibrated ensemble of ``members`` = M."""
    if not isinstance(members, int) or members < 2:
        raise ValueError(f"members: expected an int >= 2 (ensemble size), got {members!r}")
    s, e = spread2.double(), error2.double()
    s, e = (s.mean(), e.mean()) if dim is None else (s.mean(dim), e.mean(dim))
    return ((members + 1) / members * s / e).sqrt()


def _rank_bounds(ens: torch.Tensor, obs: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """``(#{x_i < y}, #{x_i = y}, M)`` per point."""
    x, y = _ensemble(ens, obs, dim, 1)
    return (x < y).sum(0), (x == y).sum(0), x.shape[0]


def rank_histogram(ens: torch.Tensor, obs: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """Frequencies ``[M+1]`` float64 (summing to 1) of the rank of ``obs`` among the members, ties spread evenly."""
    less, ties, m = _rank_bounds(ens, obs, dim)
    less, ties = less.flatten(), ties.flatten()
    w = 1.0 / (ties + 1).double()
    edges = torch.zeros(m + 2, dtype=torch.float64, device=w.device)  # mass w on ranks less .. less + ties
    edges.index_add_(0, less, w).index_add_(0, less + ties + 1, -w)
    return edges.cumsum(0)[: m + 1] / less.numel()


def _check_level(level: float) -> None:
    if isinstance(level, bool) or not isinstance(level, int | float) or not 0 < level < 1:
        raise ValueError(f"level: expected a central-interval probability 0 < level < 1, got {level!r}")


def pit_coverage(ens: torch.Tensor, obs: torch.Tensor, level: float, dim: int = 0) -> torch.Tensor:
    """Per point, the probability that the PIT lies in the central ``level`` interval, float32 in [0, 1]:
    |[lo, hi] & [(1 - level)/2, (1 + level)/2]| / (hi - lo), with [lo, hi] = [#{x < y}, #{x <= y} + 1] / (M+1)."""
    _check_level(level)
    less, ties, m = _rank_bounds(ens, obs, dim)
    lo, hi = less.double() / (m + 1), (less + ties + 1).double() / (m + 1)
    a, b = (1 - level) / 2, (1 + level) / 2
    return ((hi.clamp(max=b) - lo.clamp(min=a)).clamp(min=0) / (hi - lo)).float()


def _rank_mass_reference(ens: torch.Tensor, obs: torch.Tensor, dim: int):
    """Per point (flattened), the mass of each rank 0..M from searchsorted on the sorted members (NumPy)."""
    import numpy as np

    x, y = _ensemble(ens, obs, dim, 1)
    x = x.flatten(1).cpu().numpy()
    y = y.flatten().cpu().numpy()
    m = x.shape[0]
    mass = np.zeros((y.size, m + 1))
    for p in range(y.size):
        members = np.sort(x[:, p])
        lo, hi = np.searchsorted(members, y[p], "left"), np.searchsorted(members, y[p], "right")
        mass[p, lo : hi + 1] = 1.0 / (hi - lo + 1)
    return mass


def rank_histogram_reference(ens: torch.Tensor, obs: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """``rank_histogram`` point by point."""
    return torch.from_numpy(_rank_mass_reference(ens, obs, dim).mean(0))


def pit_coverage_reference(ens: torch.Tensor, obs: torch.Tensor, level: float, dim: int = 0) -> torch.Tensor:
    """``pit_coverage`` point by point: each rank's mass times the part of its PIT cell [r, r+1] / (M+1) inside
    the central interval."""
    import numpy as np

    _check_level(level)
    mass = _rank_mass_reference(ens, obs, dim)
    m = mass.shape[1] - 1
    a, b = (1 - level) / 2, (1 + level) / 2
    cells = np.arange(m + 1)
    inside = np.clip(np.minimum((cells + 1) / (m + 1), b) - np.maximum(cells / (m + 1), a), 0, None) * (m + 1)
    shape = obs.shape
    return torch.from_numpy(mass @ inside).float().reshape(shape)
