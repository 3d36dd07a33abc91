"""Lambda-Omega: exact uniform solution, 4th-order convergence, backends, stability errors."""

import math

import pytest
import torch

from dynadiff_fast.ops.ns_stage import OP
from dynadiff_fast.systems import get_system
from dynadiff_fast.systems.base import SolverInstability
from dynadiff_fast.systems.lambda_omega import LambdaOmega

FAST_BACKENDS = [b for b in ("cpp", "triton") if OP.unavailable_reason(b, "cpu") is None]


def test_interface_and_paper_defaults():
    s = get_system("lambda_omega")
    assert isinstance(s, LambdaOmega) and s.param_names == ("beta",) and s.channel_names == ("u", "v")
    assert s.grid == (64, 64) and s.dt_frame == 0.04 and s.mu == 0.5
    assert s.domain == ((-10.0, 10.0), (-10.0, 10.0))


def test_uniform_state_follows_the_exact_solution():
    """Uniform z = r e^{i theta}: r' = r (1 - r^2), theta' = -beta r^2, so
    r(t) = r0 e^t / sqrt(1 + r0^2 (e^{2t} - 1)), theta(t) = theta0 - beta/2 ln(1 + r0^2 (e^{2t} - 1))."""
    s = get_system("lambda_omega", resolution=16, dtype="float64", dt_frame=0.1, substeps=20)
    r0 = torch.tensor([0.3, 1.0, 1.8], dtype=torch.float64)
    th0 = torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64)
    beta = torch.tensor([[1.0], [1.25], [1.5]], dtype=torch.float64)
    z0 = torch.stack([r0 * torch.cos(th0), r0 * torch.sin(th0)], dim=1)[:, :, None, None].expand(3, 2, 16, 16)
    traj = s.simulate(beta, initial=z0, n_frames=10)
    for i in (3, 10):
        t = 0.1 * i
        g = 1 + r0**2 * (math.exp(2 * t) - 1)
        r, th = r0 * math.exp(t) / g.sqrt(), th0 - beta[:, 0] / 2 * g.log()
        exact = torch.stack([r * torch.cos(th), r * torch.sin(th)], dim=1)[:, :, None, None].expand(3, 2, 16, 16)
        torch.testing.assert_close(traj[:, i], exact, rtol=0, atol=1e-8)


def test_fourth_order_in_time():
    kw = dict(resolution=16, dtype="float64", dt_frame=0.2)
    beta = torch.tensor([[1.0], [1.5]], dtype=torch.float64)
    z0 = get_system("lambda_omega", **kw).random_initial(2, seed=3)
    ref = get_system("lambda_omega", substeps=256, **kw).simulate(beta, initial=z0, n_frames=1)[:, -1]
    errs = [
        (get_system("lambda_omega", substeps=k, **kw).simulate(beta, initial=z0, n_frames=1)[:, -1] - ref).abs().max()
        for k in (8, 16, 32)
    ]
    ratios = [float(errs[i] / errs[i + 1]) for i in range(2)]
    assert all(12 < r < 20 for r in ratios), ratios


def test_linear_diffusion_of_a_small_mode():
    """At beta-independent small amplitude the system is z_t = mu lap z + z: a Fourier mode grows as
    exp((1 - mu |k|^2) t) up to O(eps^3)."""
    s = get_system("lambda_omega", resolution=16, dtype="float64", dt_frame=0.1, substeps=10)
    X, _ = s.coordinates()
    k = 2 * math.pi / 20 * 2
    eps = 1e-5
    z0 = torch.stack([eps * torch.cos(k * X), eps * torch.sin(k * X)])[None]
    traj = s.simulate(torch.tensor([[1.2]], dtype=torch.float64), initial=z0, n_frames=5)
    torch.testing.assert_close(traj[0, -1], z0[0] * math.exp((1 - 0.5 * k**2) * 0.5), rtol=0, atol=1e-9 * eps)


@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_backends_agree_with_reference(backend):
    s = get_system("lambda_omega", resolution=8 if backend == "triton" else 16)
    beta = torch.tensor([[1.0], [1.2], [1.5]])
    z0 = s.random_initial(3, seed=4)
    ref = s.simulate(beta, initial=z0, n_frames=2, backend="torch")
    torch.testing.assert_close(s.simulate(beta, initial=z0, n_frames=2, backend=backend), ref, rtol=1e-4, atol=1e-5)


def test_random_initial_burn_in_and_seed():
    s = get_system("lambda_omega", resolution=16, burn_in=0.4)
    z0 = s.random_initial(3, seed=1)
    assert z0.shape == (3, 2, 16, 16)
    torch.testing.assert_close(z0.square().mean(dim=(-2, -1)), torch.ones(3, 2))  # RMS = ic_amplitude
    beta = torch.tensor([[1.0], [1.2], [1.5]])
    traj = s.simulate(beta, n_frames=1, seed=1)
    manual = get_system("lambda_omega", resolution=16).simulate(beta, initial=z0, n_frames=11)
    torch.testing.assert_close(traj, manual[:, 10:], rtol=1e-5, atol=1e-5)


def test_stability_errors():
    with pytest.raises(SolverInstability, match=r"row 1 .*beta.*Courant number .* > limit"):
        get_system("lambda_omega", resolution=16, dt_frame=0.3, substeps=1).simulate(torch.tensor([[0.0], [1.5]]))
    s = get_system("lambda_omega", resolution=16, substeps=1, dt_frame=0.1)
    z0 = s.random_initial(2, seed=0)
    z0[0] *= 5
    with pytest.raises(SolverInstability, match=r"trajectory 0 .*Courant"):
        s.simulate(torch.tensor([[1.0], [1.0]]), initial=z0, n_frames=1)
    with pytest.raises(ValueError, match="mu"):
        get_system("lambda_omega", mu=0.0)
    with pytest.raises(ValueError, match="not finite"):
        s.simulate(torch.tensor([[float("nan")]]))
