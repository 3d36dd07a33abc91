"""cylinder_flow: lattice units, stability checks, initial states, batched simulation (per-row tau and
cylinder), backends agreeing, NaN detection and vortex shedding actually developing."""

import math

import pytest
import torch

from dynadiff_fast.ops.lbm_step import OP
from dynadiff_fast.systems import get_system
from dynadiff_fast.systems.base import SolverInstability
from dynadiff_fast.systems.cylinder_flow import REFERENCE_REFINE, CylinderFlow

HAS_CPP = OP.unavailable_reason("cpp", "cpu") is None

# A small channel (64 x 32 saved, lattice = saved grid) keeps every test about a second on one core.
SMALL = dict(width=64, height=32, refine=1, burn_in=0)


def test_registry_and_interface():
    s = get_system("cylinder_flow")
    assert isinstance(s, CylinderFlow)
    assert s.param_names == ("Re", "r") and s.channel_names == ("u", "v") and s.initial_channels == ("u", "v")
    assert s.grid == (64, 128) and s.lattice_shape == (192, 384) and s.dt_frame == 200.0
    X, Y = s.coordinates()
    assert X.shape == (64, 128) and Y.shape == (64, 128)
    assert s.settings()["refine"] == 3


def test_lattice_units_follow_re_and_radius():
    s = CylinderFlow(refine=2, u_inflow=0.05, frame_steps=150)
    params = torch.tensor([[200.0, 10.0], [500.0, 25.0]], dtype=torch.float64)
    u = s.lattice_units(params)
    diameter = 2 * params[:, 1] * 2 / REFERENCE_REFINE
    torch.testing.assert_close(u["diameter"], diameter)
    torch.testing.assert_close(u["tau"], 3 * 0.05 * diameter / params[:, 0] + 0.5)
    torch.testing.assert_close(u["omega"], 1 / u["tau"])
    torch.testing.assert_close(u["mach"], torch.full((2,), 0.05 * math.sqrt(3), dtype=torch.float64))
    assert u["steps_per_frame"].tolist() == [100.0, 100.0]  # 150 reference steps at 2/3 the resolution
    assert u["burn_in_steps"].tolist() == [round(s.burn_in * 2 / 3)] * 2


def test_paper_grid_is_stable_at_default_settings():
    re = torch.linspace(200, 500, 31, dtype=torch.float64)
    r = torch.linspace(10, 25, 16, dtype=torch.float64)
    params = torch.cartesian_prod(re, r)
    CylinderFlow().validate_params(params)  # raises if any environment is outside the limits


def test_unstable_settings_name_the_row_value_and_limit():
    params = torch.tensor([[200.0, 10.0], [5000.0, 10.0]])
    with pytest.raises(
        SolverInstability, match=r"row 1 \(\{'Re': 5000.0, 'r': 10.0\}\): tau - 1/2 = 0.00016 .*tau_margin"
    ):
        CylinderFlow(refine=1).validate_params(params)
    with pytest.raises(SolverInstability, match=r"row 0 .*Mach number = 0.173205 must be <= max_mach = 0.15"):
        CylinderFlow(u_inflow=0.1).validate_params(params)
    with pytest.raises(SolverInstability, match=r"row 0 .*cylinder clearance"):
        CylinderFlow().validate_params(torch.tensor([[200.0, 120.0]]))
    with pytest.raises(SolverInstability, match=r"row 0 .*Re = -1 must be > 0"):
        CylinderFlow().validate_params(torch.tensor([[-1.0, 10.0]]))
    with pytest.raises(ValueError, match=r"params must have shape \[n, 2\]"):
        CylinderFlow().validate_params(torch.tensor([200.0, 10.0]))


def test_bad_settings_raise():
    with pytest.raises(ValueError, match="collision must be one of"):
        CylinderFlow(collision="mrt")
    with pytest.raises(ValueError, match="walls must be one of"):
        CylinderFlow(walls="slip")
    with pytest.raises(ValueError, match="refine must be an int >= 1"):
        CylinderFlow(refine=0)
    with pytest.raises(ValueError, match="u_inflow must be in"):
        CylinderFlow(u_inflow=0.7)
    with pytest.raises(ValueError, match="unknown setting"):
        get_system("cylinder_flow", resolution=64)


def test_random_initial_is_seeded_uniform_flow_plus_perturbation():
    s = CylinderFlow(**SMALL)
    a, b, c = s.random_initial(3, seed=1), s.random_initial(3, seed=1), s.random_initial(3, seed=2)
    assert a.shape == (3, 2, 32, 64)
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)
    assert not torch.allclose(a[0], a[1])  # every row differs
    torch.testing.assert_close(a[:, 0].mean(dim=(-2, -1)), torch.ones(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(a[:, 1].std(dim=(-2, -1)), torch.full((3,), s.perturbation), rtol=1e-4, atol=0)


def test_simulate_batches_environments_with_their_own_cylinder():
    s = CylinderFlow(**SMALL, frame_steps=30)
    params = torch.tensor([[200.0, 10.0], [400.0, 20.0]])
    init = s.random_initial(2, seed=0)
    traj = s.simulate(params, initial=init, n_frames=3)
    assert traj.shape == (2, 4, 2, 32, 64) and traj.dtype == torch.float32
    solid = s.solid_mask(params)
    assert solid[1].sum() > 3 * solid[0].sum()  # radius 2x -> area 4x
    # frame 0 is the initial state outside the cylinder; the cylinder is at rest in every frame
    torch.testing.assert_close(traj[:, 0].masked_fill(solid[:, None], 0), init.masked_fill(solid[:, None], 0))
    assert traj[1][:, :, solid[1]].abs().max() == 0
    # rows evolve independently: simulating one row alone gives the same trajectory
    alone = s.simulate(params[1:], initial=init[1:], n_frames=3)
    torch.testing.assert_close(alone[0], traj[1])


@pytest.mark.skipif(not HAS_CPP, reason="the C++ extension is not built")
def test_backends_agree_on_a_trajectory():
    s = CylinderFlow(**SMALL, frame_steps=20)
    params = torch.tensor([[250.0, 12.0], [450.0, 22.0]])
    init = s.random_initial(2, seed=3)
    ref = s.simulate(params, initial=init, n_frames=2, backend="torch")
    out = s.simulate(params, initial=init, n_frames=2, backend="cpp")
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)


def test_initial_shape_and_nan_are_reported():
    s = CylinderFlow(**SMALL, frame_steps=10)
    params = torch.tensor([[200.0, 10.0]])
    with pytest.raises(ValueError, match=r"initial must have shape \(1, 2, 32, 64\)"):
        s.simulate(params, initial=torch.zeros(1, 1, 32, 64))
    with pytest.raises(ValueError, match="initial contains NaN"):
        s.simulate(params, initial=torch.full((1, 2, 32, 64), float("nan")))
    # a state far beyond the lattice's velocity range blows up: a clear error naming the row, no NaN frames
    wild = s.random_initial(1, seed=0) * 50
    with pytest.raises(SolverInstability, match=r"trajectory 0 \(\{'Re': 200.0, 'r': 10.0\}\) became non-finite"):
        s.simulate(params, initial=wild, n_frames=20)


@pytest.mark.slow
@pytest.mark.skipif(not HAS_CPP, reason="the C++ extension is not built (the torch reference takes minutes)")
def test_vortex_shedding_develops():
    """After the burn-in the transverse velocity in the wake oscillates (a von Karman street), with a
    period of a few frames, in every environment."""
    s = CylinderFlow(**{**SMALL, "burn_in": 12000}, frame_steps=200)
    params = torch.tensor([[200.0, 12.0], [450.0, 20.0]])
    traj = s.simulate(params, n_frames=40, seed=0, backend="cpp")
    assert torch.isfinite(traj).all()
    cx, cy = int(s.center_x * s.width), int(s.center_y * s.height)
    probe = traj[:, :, 1, cy, cx + 12]  # v on the centre line, a few diameters downstream
    for row in probe:
        crossings = int(((row[1:] > 0) != (row[:-1] > 0)).sum())
        assert row.std() > 0.1, "no transverse oscillation in the wake"
        assert crossings >= 6, f"v changed sign {crossings} times in 40 frames: no periodic shedding"
