"""Shared pseudo-spectral machinery for the periodic 2-D systems.

Fields live on a periodic ``[H, W]`` grid (y along H, x along W) and in Fourier space as the
``torch.fft.rfft2`` half spectrum ``[..., H, W//2 + 1]``. Angular wavenumbers ``k = 2 pi m / L``.

Time stepping (``lawson.py``): the systems are semilinear, ``d u_hat/dt = L u_hat + N(u_hat)`` with
a diagonal linear part ``L = -nu |k|^2``, integrated by the integrating-factor (Lawson) RK4 scheme,
whose stage combination is the fused hot op ``dynadiff_fast.ops.ns_stage``. This module holds the
rest: wavenumbers, the 2/3 dealiasing mask, the Poisson solve, the integrating factor, Gaussian
random fields for initial conditions, and the setting, step-size and frame-loop checks the systems
share.
"""

from __future__ import annotations

import dataclasses
import math

import torch

from dynadiff_fast.systems.base import SolverInstability

# RK4's stability region reaches |dt * lambda| ~ 2.8 on the imaginary axis (advection) and ~2.78 on
# the negative real axis; solvers aim well inside it (their ``cfl`` setting) and refuse beyond 1.0
# of the "Courant number" defined by each system.
COURANT_LIMIT = 1.0


def validate_settings(system, positive: tuple[str, ...]) -> None:
    """Setting checks shared by the pseudo-spectral systems: ``positive`` fields > 0, resolution an int
    >= 8, burn_in >= 0, substeps an int >= 0 (0 = automatic), cfl within the Courant limit, known dtype."""
    for name in positive:
        if not getattr(system, name) > 0:
            raise ValueError(f"{system.name}: {name} must be > 0, got {getattr(system, name)}")
    if not isinstance(system.resolution, int) or system.resolution < 8:
        raise ValueError(f"{system.name}: resolution must be an int >= 8, got {system.resolution!r}")
    if not system.burn_in >= 0:
        raise ValueError(f"{system.name}: burn_in must be >= 0, got {system.burn_in}")
    if not isinstance(system.substeps, int) or system.substeps < 0:
        raise ValueError(f"{system.name}: substeps must be an int >= 0 (0 = automatic), got {system.substeps!r}")
    if system.cfl > COURANT_LIMIT:
        raise ValueError(f"{system.name}: cfl must be <= {COURANT_LIMIT}, got {system.cfl}")
    dtype_of(system.dtype)


def dtype_of(name: str) -> torch.dtype:
    """``"float32"``/``"float64"`` -> torch dtype (the solver settings store the name)."""
    table = {"float32": torch.float32, "float64": torch.float64}
    if name not in table:
        raise ValueError(f"dtype: {name!r} is not supported (valid: float32, float64)")
    return table[name]


def complex_of(dtype: torch.dtype) -> torch.dtype:
    return torch.complex64 if dtype == torch.float32 else torch.complex128


def dealias_cutoff(n: int) -> int:
    """Largest integer wavenumber kept by the 2/3 rule on ``n`` points: ``K < n/3``.

    A product of two modes ``p, q`` with ``|p|, |q| <= K`` aliases onto ``p + q - n``; it lands inside
    the kept band only if ``2K - n >= -K``, so ``3K < n`` keeps every kept mode alias-free.
    """
    return (n - 1) // 3


@dataclasses.dataclass(frozen=True)
class SpectralGrid:
    """Wavenumbers of a periodic ``[H, W]`` grid on a domain of size ``(Ly, Lx)``.

    Attributes (on ``device``, in ``dtype``):
        kx [1, W//2+1], ky [H, 1]: angular wavenumbers of the rfft2 half spectrum
        k2 [H, W//2+1]: |k|^2;  mask [H, W//2+1]: 1 where the 2/3 rule keeps the mode, else 0
    """

    shape: tuple[int, int]
    lengths: tuple[float, float]
    kx: torch.Tensor
    ky: torch.Tensor
    k2: torch.Tensor
    mask: torch.Tensor

    @classmethod
    def build(cls, shape, lengths, dtype=torch.float64, device=None) -> SpectralGrid:
        h, w = shape
        ly, lx = lengths
        my = torch.fft.fftfreq(h, d=1.0 / h, dtype=torch.float64, device=device)
        mx = torch.fft.rfftfreq(w, d=1.0 / w, dtype=torch.float64, device=device)
        ky = (2 * math.pi / ly) * my[:, None]
        kx = (2 * math.pi / lx) * mx[None, :]
        keep = (my.abs()[:, None] <= dealias_cutoff(h)) & (mx.abs()[None, :] <= dealias_cutoff(w))
        return cls(
            shape=(h, w),
            lengths=(ly, lx),
            kx=kx.to(dtype),
            ky=ky.to(dtype),
            k2=(kx**2 + ky**2).to(dtype),
            mask=keep.to(dtype),
        )

    @property
    def spacing(self) -> tuple[float, float]:
        """Grid spacing ``(dy, dx)``."""
        return self.lengths[0] / self.shape[0], self.lengths[1] / self.shape[1]

    def integrating_factor(self, diffusivity: torch.Tensor, dt: float) -> torch.Tensor:
        """``E = exp(-diffusivity |k|^2 dt/2)`` ``[n, 1, H, W//2+1]`` for ``diffusivity [n]`` (per row)."""
        d = torch.as_tensor(diffusivity, dtype=torch.float64, device=self.k2.device).reshape(-1, 1, 1, 1)
        return torch.exp(-d * self.k2.to(torch.float64) * (dt / 2)).to(self.k2.dtype)


def velocity_from_vorticity(w_hat: torch.Tensor, grid: SpectralGrid) -> tuple[torch.Tensor, torch.Tensor]:
    """Poisson solve ``lap psi = -w``, ``u = d psi/dy``, ``v = -d psi/dx`` in Fourier space.

    ``w_hat [..., H, W//2+1]`` -> ``(u_hat, v_hat)``; the mean mode of ``psi`` is set to 0.
    """
    inv_k2 = torch.where(grid.k2 > 0, 1.0 / grid.k2.clamp_min(1e-30), torch.zeros_like(grid.k2))
    psi_hat = w_hat * inv_k2
    return 1j * grid.ky * psi_hat, -1j * grid.kx * psi_hat


def gaussian_random_field(
    n: int,
    grid: SpectralGrid,
    alpha: float,
    tau: float,
    sigma: float | None = None,
    channels: int = 1,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Zero-mean periodic Gaussian random fields ``[n, channels, H, W]`` (float64, on the CPU).

    Covariance ``sigma^2 (-lap + tau^2)^(-alpha)`` as in the FNO data generators (Li et al. 2021,
    ``GaussianRF(2, s, alpha=2.5, tau=7)``): each Fourier coefficient is
    ``sigma (|k|^2 + tau^2)^(-alpha/2) (a + i b)``, ``a, b ~ N(0, 1)``; ``sigma`` defaults to FNO's
    ``tau^(alpha - 1)``. Modes above the 2/3 cutoff are zeroed so the field is already dealiased.
    Sampled on the CPU with ``generator`` so a seed gives the same field on every device.
    """
    h, w = grid.shape
    sigma = tau ** (alpha - 1.0) if sigma is None else sigma
    k2 = grid.k2.to(device="cpu", dtype=torch.float64)
    amp = sigma * (k2 + tau**2) ** (-alpha / 2) * grid.mask.cpu().to(torch.float64)
    amp[0, 0] = 0.0
    shape = (n, channels, h, w // 2 + 1)
    coeff = torch.complex(
        torch.randn(shape, generator=generator, dtype=torch.float64),
        torch.randn(shape, generator=generator, dtype=torch.float64),
    )
    # irfft2 divides by H*W; the coefficients are those of sum_k c_k exp(i k.x).
    return torch.fft.irfft2(coeff * amp * (h * w), s=(h, w))


def check_backend(backend: str) -> str:
    valid = ("auto", "torch", "cpp", "cuda", "triton")
    if backend not in valid:
        raise ValueError(f"backend: {backend!r} is not valid (valid: {', '.join(valid)})")
    return backend


def resolve_device(device, *tensors) -> torch.device:
    """``device`` if given, else the device of the first tensor given, else the CPU."""
    if device is not None:
        return torch.device(device)
    for t in tensors:
        if isinstance(t, torch.Tensor):
            return t.device
    return torch.device("cpu")


def choose_substeps(system, rate: torch.Tensor, duration: float, t: float, params: torch.Tensor) -> int:
    """Solver steps for the next ``duration`` time units.

    ``rate [n]``: each row's Courant number per unit time step (its explicit stiffness), so a step
    ``dt`` has Courant number ``dt * rate``. With ``system.substeps == 0`` the fewest steps keeping it
    ``<= system.cfl`` for every row; with a fixed ``substeps`` a row above ``COURANT_LIMIT`` raises
    ``SolverInstability`` naming the trajectory, its parameters, the value and the limit.
    """
    if not system.substeps:
        peak = float(rate.max())
        return max(1, math.ceil(duration * peak / system.cfl - 1e-9)) if math.isfinite(peak) else 1
    _refuse_courant(
        system, rate * (duration / system.substeps), params, "trajectory", f"in the frame ending at t={t:.4g}"
    )
    return system.substeps


def check_static_courant(system, rate: torch.Tensor, params: torch.Tensor) -> None:
    """Refuse a fixed ``substeps`` whose a-priori Courant number ``rate * dt`` exceeds the limit."""
    if not system.substeps:
        return
    dt = system.dt_frame / system.substeps
    _refuse_courant(system, rate * dt, params, "environment row", f"a priori (dt={dt:.3g})")


def _refuse_courant(system, courant: torch.Tensor, params: torch.Tensor, row: str, when: str) -> None:
    """``SolverInstability`` naming the first row whose Courant number exceeds ``COURANT_LIMIT`` (if any)."""
    bad = courant > COURANT_LIMIT
    if bad.any():
        i = int(bad.nonzero()[0])
        env = dict(zip(system.param_names, params[i].tolist()))
        raise SolverInstability(
            f"{system.name}: {row} {i} ({env}) reaches Courant number {float(courant[i]):.3g} > limit "
            f"{COURANT_LIMIT} {when} with substeps={system.substeps}; raise substeps or use 0 (automatic)"
        )


def check_initial(system, initial, n: int) -> torch.Tensor:
    """``initial`` as a tensor of shape ``[n, len(initial_channels), H, W]`` in the solver dtype."""
    x = torch.as_tensor(initial)
    expected = (n, len(system.initial_channels), *system.grid)
    if tuple(x.shape) != expected:
        raise ValueError(
            f"{system.name}: initial must have shape {expected} ({', '.join(system.initial_channels)}), "
            f"got {tuple(x.shape)}"
        )
    if not torch.isfinite(x).all():
        raise ValueError(f"{system.name}: initial contains NaN/inf values")
    return x.to(dtype_of(system.dtype))


def run_frames(solver, burn_in: float, dt_frame: float, n_frames: int) -> torch.Tensor:
    """Advance ``solver`` through ``burn_in`` (unsaved), then save ``n_frames + 1`` frames.

    ``solver`` has ``advance(duration, t) -> frame`` and ``frame()``; returns ``[n, n_frames+1, ...]``.
    """
    n_burn = round(burn_in / dt_frame)
    for k in range(n_burn):
        solver.advance(dt_frame, t=(k + 1) * dt_frame)
    if burn_in - n_burn * dt_frame > 1e-9:
        solver.advance(burn_in - n_burn * dt_frame, t=burn_in)
    frames = [solver.frame()]
    for k in range(n_frames):
        frames.append(solver.advance(dt_frame, t=burn_in + (k + 1) * dt_frame))
    return torch.stack(frames, dim=1)
