"""Kolmogorov flow: laminar fixed point, exact shell solutions, 4th-order convergence, backends, errors."""

import math

import pytest
import torch

from dynadiff_fast.ops.ns_stage import OP
from dynadiff_fast.systems import get_system
from dynadiff_fast.systems.base import SolverInstability
from dynadiff_fast.systems.kolmogorov import Kolmogorov

F64 = dict(resolution=16, dtype="float64")
FAST_BACKENDS = [b for b in ("cpp", "triton") if OP.unavailable_reason(b, "cpu") is None]


def test_interface_and_paper_defaults():
    s = get_system("kolmogorov")
    assert isinstance(s, Kolmogorov) and s.param_names == ("Re",)
    assert s.channel_names == ("vorticity", "u", "v") and s.grid == (64, 64)
    assert s.dt_frame == 0.2 and s.forcing_wavenumber == 3
    assert s.domain == ((-math.pi, math.pi), (-math.pi, math.pi))
    X, _ = s.coordinates()
    assert float(X[0, 0]) == pytest.approx(-math.pi)
    with pytest.raises(ValueError, match="forcing_wavenumber"):
        get_system("kolmogorov", resolution=16, forcing_wavenumber=6)  # 2/3 rule keeps |k| <= 5


def test_laminar_state_is_steady():
    """w = -(Re/n) cos(n y) solves Re^-1 lap w = n cos(n y) with zero advection: it must not move."""
    s = get_system("kolmogorov", **F64)
    Re = torch.tensor([[60.0], [140.0], [250.0]], dtype=torch.float64)
    w0 = torch.stack([s.laminar(float(r)) for r in Re[:, 0]])[:, None]
    traj = s.simulate(Re, initial=w0, n_frames=5)
    torch.testing.assert_close(traj[:, -1, :1], w0, rtol=0, atol=1e-9 * float(w0.abs().max()))
    # u = (Re / n^2) sin(n y), v = 0.
    _, Y = s.coordinates()
    torch.testing.assert_close(traj[2, -1, 1], 250 / 9 * torch.sin(3 * Y), rtol=0, atol=1e-9)


def test_shell_perturbation_decays_exactly():
    """Perturbations on the forcing shell |k| = n (sin 3x, cos 3y) keep the advection zero and decay as
    exp(-n^2 t / Re): w(t) = w_L + exp(-9 t / Re) (w0 - w_L), a different rate per row."""
    s = get_system("kolmogorov", **F64)
    X, Y = s.coordinates()
    Re = torch.tensor([[50.0], [120.0]], dtype=torch.float64)
    pert = torch.sin(3 * X) + 0.5 * torch.cos(3 * Y + 0.4)
    lam = torch.stack([s.laminar(50.0), s.laminar(120.0)])[:, None]
    traj = s.simulate(Re, initial=lam + pert, n_frames=5)
    t = 5 * s.dt_frame
    exact = lam + torch.exp(-9 * t / Re)[:, :, None, None] * pert
    torch.testing.assert_close(traj[:, -1, :1], exact, rtol=0, atol=1e-9)


def test_fourth_order_in_time():
    kw = dict(dt_frame=0.2, **F64)
    Re = torch.tensor([[100.0], [220.0]], dtype=torch.float64)
    w0 = 3 * get_system("kolmogorov", **kw).random_initial(2, seed=3)
    ref = get_system("kolmogorov", substeps=256, **kw).simulate(Re, initial=w0, n_frames=1)[:, -1]
    errs = [
        (get_system("kolmogorov", substeps=k, **kw).simulate(Re, initial=w0, n_frames=1)[:, -1] - ref).abs().max()
        for k in (4, 8, 16)
    ]
    ratios = [float(errs[i] / errs[i + 1]) for i in range(2)]
    assert all(12 < r < 20 for r in ratios), ratios


@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_backends_agree_with_reference(backend):
    """Per-row Re exercises the per-row integrating factor of the fused stage."""
    s = get_system("kolmogorov", resolution=12 if backend == "triton" else 16)
    Re = torch.tensor([[50.0], [130.0], [250.0]])
    w0 = 2 * s.random_initial(3, seed=2)
    ref = s.simulate(Re, initial=w0, n_frames=2, backend="torch")
    got = s.simulate(Re, initial=w0, n_frames=2, backend=backend)
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4 * float(ref.abs().max()))


def test_turbulent_after_burn_in_and_seeded():
    s = get_system("kolmogorov", resolution=16, burn_in=2.0)
    Re = torch.tensor([[100.0], [200.0]])
    traj = s.simulate(Re, n_frames=2, seed=5)
    assert traj.shape == (2, 3, 3, 16, 16) and torch.isfinite(traj).all()
    torch.testing.assert_close(traj, s.simulate(Re, n_frames=2, seed=5))
    # Not the laminar state (random initial states + burn-in), and the frames move.
    assert (traj[0, -1, 0] - s.laminar(100.0).float()).abs().max() > 1.0
    assert (traj[:, 1] - traj[:, 0]).abs().max() > 1e-3


def test_bad_reynolds_numbers():
    s = get_system("kolmogorov", resolution=16)
    with pytest.raises(SolverInstability, match=r"row 1 .*Re.*-5.*must be > 0"):
        s.simulate(torch.tensor([[100.0], [-5.0]]))
    with pytest.raises(ValueError, match="not finite"):
        s.simulate(torch.tensor([[float("inf")]]))
    with pytest.raises(ValueError, match=r"\[n, 1\]"):
        s.simulate(torch.ones(2, 2))
