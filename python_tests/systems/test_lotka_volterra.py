"""Lotka-Volterra: conserved quantity (4th-order drift), fixed point, interface and errors."""

import pytest
import torch

from dynadiff_fast.systems import get_system
from dynadiff_fast.systems.base import SolverInstability
from dynadiff_fast.systems.lotka_volterra import LotkaVolterra

PARAMS = torch.tensor([[0.5, 0.5], [1.0, 0.7], [0.8, 1.0]], dtype=torch.float64)


def test_interface_and_shapes():
    s = get_system("lotka_volterra")
    assert isinstance(s, LotkaVolterra) and s.param_names == ("beta", "delta") and s.grid == ()
    traj = s.simulate(PARAMS, n_frames=100, seed=3)
    assert traj.shape == (3, 101, 2) and traj.dtype == torch.float32
    assert ((traj[:, 0] >= 1) & (traj[:, 0] <= 3)).all()
    torch.testing.assert_close(traj, s.simulate(PARAMS, n_frames=100, seed=3))
    with pytest.raises(ValueError, match="ODE"):
        s.coordinates()


def test_invariant_conserved_with_fourth_order_drift():
    """V = delta x - gamma ln x + beta y - alpha ln y is constant on every orbit; RK4 drift ~ dt^4."""
    x0 = get_system("lotka_volterra").random_initial(3, seed=0).double()
    drifts = []
    for k in (2, 4):
        s = get_system("lotka_volterra", substeps=k, dtype="float64")
        traj = s.simulate(PARAMS, initial=x0, n_frames=100)
        V = s.invariant(traj, PARAMS)
        drifts.append(float((V - V[:, :1]).abs().max()))
    assert drifts[1] < 1e-5
    assert 10 < drifts[0] / drifts[1] < 24, drifts


def test_fixed_point_stays():
    s = get_system("lotka_volterra", dtype="float64")
    eq = torch.stack([s.gamma / PARAMS[:, 1], s.alpha / PARAMS[:, 0]], dim=1)
    traj = s.simulate(PARAMS, initial=eq, n_frames=20)
    torch.testing.assert_close(traj[:, -1], eq, rtol=0, atol=1e-13)


def test_bad_inputs():
    s = get_system("lotka_volterra")
    with pytest.raises(SolverInstability, match=r"row 1 .*must be > 0"):
        s.simulate(torch.tensor([[0.5, 0.5], [-0.1, 0.5]]))
    with pytest.raises(ValueError, match=r"\[n, 2\]"):
        s.simulate(torch.ones(2, 3))
    with pytest.raises(ValueError, match="not finite"):
        s.simulate(torch.tensor([[0.5, float("nan")]]))
    with pytest.raises(ValueError, match="initial"):
        s.simulate(torch.ones(1, 2), initial=torch.tensor([[1.0, -1.0]]))
    with pytest.raises(SolverInstability, match="raise substeps"):
        get_system("lotka_volterra", substeps=1, dt_frame=1.0).simulate(torch.ones(1, 2))
