"""Forced 2-D Navier-Stokes (vorticity form): exact solutions, 4th-order convergence, backends, errors."""

import math

import pytest
import torch

from dynadiff_fast.ops.ns_stage import OP
from dynadiff_fast.systems import get_system
from dynadiff_fast.systems.base import SolverInstability
from dynadiff_fast.systems.navier_stokes import NavierStokes

F64 = dict(resolution=16, dtype="float64")
FAST_BACKENDS = [b for b in ("cpp", "triton") if OP.unavailable_reason(b, "cpu") is None]


def _shell_field(s):
    """A vorticity on the forcing shell |k|^2 = 8 pi^2 (wavevectors 2 pi (1, +-1)): its advection vanishes."""
    X, Y = s.coordinates()
    return torch.cos(2 * math.pi * (X - Y)) + 0.5 * torch.sin(2 * math.pi * (X + Y) + 0.3)


def test_registry_and_interface():
    s = get_system("navier_stokes", resolution=32)
    assert isinstance(s, NavierStokes)
    assert s.param_names == ("A", "s") and s.channel_names == ("vorticity", "u", "v")
    assert s.initial_channels == ("vorticity",) and s.grid == (32, 32)
    assert s.dt_frame == 0.025 and s.viscosity == 1e-3
    X, Y = s.coordinates()
    assert X.shape == (32, 32) and float(X[0, 1]) == pytest.approx(1 / 32) and float(Y[1, 0]) == pytest.approx(1 / 32)
    with pytest.raises(ValueError, match="unknown setting"):
        get_system("navier_stokes", reynolds=3)


def test_forced_shell_solution_is_exact():
    """Fields on the forcing shell stay there, the advection vanishes and each mode relaxes linearly to the
    Stokes response: w(t) = w_s + exp(-nu k^2 t) (w0 - w_s), w_s = f / (nu k^2). Every row has its own (A, s)."""
    s = get_system("navier_stokes", viscosity=0.01, dt_frame=0.1, substeps=4, **F64)
    p = torch.tensor([[0.3, 0.2], [0.0, 0.0], [0.1, 0.7]], dtype=torch.float64)
    w0 = _shell_field(s).expand(3, 1, 16, 16)
    traj = s.simulate(p, initial=w0, n_frames=5)
    assert traj.shape == (3, 6, 3, 16, 16) and traj.dtype == torch.float64
    k2 = 8 * math.pi**2
    ws = s.forcing(p)[:, None] / (0.01 * k2)
    for i, t in enumerate(0.1 * torch.arange(6, dtype=torch.float64)):
        exact = ws + torch.exp(-0.01 * k2 * t) * (w0 - ws)
        torch.testing.assert_close(traj[:, i, :1], exact, rtol=0, atol=1e-9)
    # The saved velocity is the one of the saved vorticity: curl u = w, div u = 0.
    u_hat, v_hat, w_hat = (torch.fft.rfft2(traj[:, -1, c]) for c in (1, 2, 0))
    kx = 2 * math.pi * torch.fft.rfftfreq(16, 1 / 16, dtype=torch.float64)[None, None, :]
    ky = 2 * math.pi * torch.fft.fftfreq(16, 1 / 16, dtype=torch.float64)[None, :, None]
    torch.testing.assert_close(1j * kx * v_hat - 1j * ky * u_hat, w_hat)
    torch.testing.assert_close(1j * kx * u_hat + 1j * ky * v_hat, torch.zeros_like(u_hat))


def test_unforced_taylor_green_decays_exponentially():
    """A = 0: Taylor-Green w = 2 cos(4 pi x) cos(4 pi y) decays as exp(-nu 32 pi^2 t)."""
    s = get_system("navier_stokes", viscosity=0.005, dt_frame=0.05, **F64)
    X, Y = s.coordinates()
    w0 = (2 * torch.cos(4 * math.pi * X) * torch.cos(4 * math.pi * Y))[None, None]
    traj = s.simulate(torch.zeros(1, 2, dtype=torch.float64), initial=w0, n_frames=4)
    torch.testing.assert_close(traj[0, -1, 0], w0[0, 0] * math.exp(-0.005 * 32 * math.pi**2 * 0.2), rtol=0, atol=1e-10)


def test_fourth_order_in_time():
    """Error vs a 256-step solution on a nonlinear (multi-shell) state: ratio ~16 per halving of dt."""
    kw = dict(dt_frame=0.1, **F64)
    s = get_system("navier_stokes", **kw)
    p = torch.tensor([[0.2, 0.3], [0.3, 0.8]], dtype=torch.float64)
    w0 = 4 * s.random_initial(2, seed=3)
    ref = get_system("navier_stokes", substeps=256, **kw).simulate(p, initial=w0, n_frames=1)[:, -1]
    errs = [
        (get_system("navier_stokes", substeps=k, **kw).simulate(p, initial=w0, n_frames=1)[:, -1] - ref).abs().max()
        for k in (8, 16, 32)
    ]
    ratios = [float(errs[i] / errs[i + 1]) for i in range(2)]
    assert all(12 < r < 20 for r in ratios), ratios
    assert float(errs[0]) > 1e-11  # measured above round-off


@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_backends_agree_with_reference(backend):
    s = get_system("navier_stokes", resolution=8 if backend == "triton" else 16)
    p = torch.tensor([[0.1, 0.0], [0.2, 0.4], [0.3, 0.9]])
    w0 = 3 * s.random_initial(3, seed=1)
    ref = s.simulate(p, initial=w0, n_frames=2, backend="torch")
    got = s.simulate(p, initial=w0, n_frames=2, backend=backend)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4 * float(ref.abs().max()))


def test_random_initial_and_burn_in():
    """initial=None draws random_initial(n, seed) and runs burn_in first; seeds are reproducible."""
    s = get_system("navier_stokes", resolution=16, burn_in=0.1, dt_frame=0.05)
    p = torch.tensor([[0.2, 0.1], [0.25, 0.5]])
    traj = s.simulate(p, n_frames=2, seed=7)
    torch.testing.assert_close(traj, s.simulate(p, n_frames=2, seed=7))
    assert not torch.allclose(traj, s.simulate(p, n_frames=2, seed=8))
    manual = get_system("navier_stokes", resolution=16, dt_frame=0.05).simulate(
        p, initial=s.random_initial(2, seed=7), n_frames=4
    )
    torch.testing.assert_close(traj, manual[:, 2:], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(traj[:, 0, 0], s.random_initial(2, seed=7)[:, 0])
    x0 = s.random_initial(2, seed=7)
    assert x0.shape == (2, 1, 16, 16) and x0.dtype == torch.float32


def test_bad_inputs():
    s = get_system("navier_stokes", resolution=16)
    with pytest.raises(ValueError, match=r"\[n, 2\]"):
        s.simulate(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="not finite"):
        s.simulate(torch.tensor([[0.1, float("nan")]]))
    with pytest.raises(ValueError, match="initial must have shape"):
        s.simulate(torch.zeros(1, 2), initial=torch.zeros(1, 1, 8, 8))
    with pytest.raises(ValueError, match="n_frames"):
        s.simulate(torch.zeros(1, 2), n_frames=-1)
    with pytest.raises(ValueError, match="viscosity"):
        get_system("navier_stokes", viscosity=-1.0)
    with pytest.raises(ValueError, match="dtype"):
        get_system("navier_stokes", dtype="float16")
    with pytest.raises(ValueError, match="backend"):
        s.simulate(torch.zeros(1, 2), backend="numpy")


def test_fixed_step_beyond_cfl_names_the_trajectory():
    """substeps fixed too low for a fast row: SolverInstability naming that row, its value and the limit."""
    s = get_system("navier_stokes", resolution=16, substeps=1, dt_frame=0.05)
    w0 = s.random_initial(2, seed=0)
    w0[1] *= 50
    with pytest.raises(SolverInstability, match=r"trajectory 1 .*Courant number .* > limit 1\.0"):
        s.simulate(torch.tensor([[0.1, 0.0], [0.1, 0.0]]), initial=w0, n_frames=1)
    # The automatic step takes the same fast state without complaint.
    traj = get_system("navier_stokes", resolution=16, dt_frame=0.05).simulate(
        torch.tensor([[0.1, 0.0], [0.1, 0.0]]), initial=w0, n_frames=1
    )
    assert torch.isfinite(traj).all()


def test_non_finite_state_mid_run_names_the_trajectory(monkeypatch):
    """A state that turns NaN mid-run (here injected into row 2's stage output) stops the run with
    SolverInstability naming that trajectory and its parameters, never a silent NaN trajectory."""
    from dynadiff_fast.ops import ns_stage as ops

    bind = ops.bind

    def poisoned(backend, device_type):
        stage_fn, advection_fn = bind(backend, device_type)

        def stage(*args):
            acc, nxt = stage_fn(*args)
            acc[2] = float("nan")
            return acc, nxt

        return stage, advection_fn

    monkeypatch.setattr(ops, "bind", poisoned)
    s = get_system("navier_stokes", resolution=16, dt_frame=0.05)
    p = torch.tensor([[0.1, 0.0], [0.2, 0.1], [0.3, 0.2]])
    with pytest.raises(SolverInstability, match=r"trajectory 2 \(\{'A': 0\.3.*non-finite"):
        s.simulate(p, initial=s.random_initial(3), n_frames=2)
