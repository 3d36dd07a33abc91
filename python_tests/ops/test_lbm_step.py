"""lbm_step: every backend equals the torch reference step by step; the reference obeys the lattice
Boltzmann invariants (mass, equilibrium fixed point) and the viscosity nu = (tau - 1/2) / 3 (shear-wave decay)."""

import math

import pytest
import torch

from dynadiff_fast import _backend
from dynadiff_fast.ops.lbm_step import OP, equilibrium, lbm_step, macroscopic, reference
from dynadiff_fast.ops.lbm_step import _lbm_step_op as lbm_step_op

HAS_CPP = OP.unavailable_reason("cpp", "cpu") is None
needs_cpp = pytest.mark.skipif(not HAS_CPP, reason="the C++ extension is not built")


def random_state(n, h, w, gen, dtype=torch.float32, amp=0.05):
    """Near-equilibrium populations with random density/velocity and a small non-equilibrium part."""
    rho = 1 + amp * torch.rand(n, h, w, generator=gen, dtype=torch.float64)
    ux, uy = (amp * torch.randn(n, h, w, generator=gen, dtype=torch.float64) for _ in range(2))
    f = equilibrium(rho, ux, uy) + 1e-3 * torch.randn(n, 9, h, w, generator=gen, dtype=torch.float64)
    return f.to(dtype)


def random_case(n, h, w, gen):
    """Different omega and a different obstacle mask per environment."""
    f = random_state(n, h, w, gen)
    omega = 0.6 + 1.35 * torch.rand(n, generator=gen)
    solid = torch.rand(n, h, w, generator=gen) < 0.15
    u_in = 0.03 + 0.04 * torch.rand(n, h, generator=gen)
    return f, omega, solid, u_in


BOUNDARIES = [(x, y) for x in reference.X_BOUNDARIES for y in reference.Y_BOUNDARIES]


@needs_cpp
@pytest.mark.parametrize("shape", [(1, 1, 1), (3, 7, 11), (2, 5, 2), (2, 1, 9), (4, 9, 33)])
@pytest.mark.parametrize("x_boundary,y_boundary", BOUNDARIES)
@pytest.mark.parametrize("collision,smagorinsky", [("bgk", 0.0), ("trt", 0.0), ("trt", 0.15), ("bgk", 0.15)])
def test_cpp_matches_reference(shape, x_boundary, y_boundary, collision, smagorinsky, rng):
    n, h, w = shape
    if x_boundary == "inflow_outflow" and w < 2:
        pytest.skip("an inlet and an outlet column need W >= 2")
    f, omega, solid, u_in = random_case(n, h, w, rng)
    kw = dict(collision=collision, smagorinsky=smagorinsky, x_boundary=x_boundary, y_boundary=y_boundary)
    ref, out = f, f
    for _ in range(3):  # step by step: the reference in float64 as the truth
        ref = lbm_step(ref.double(), omega, solid, u_in, backend="torch", **kw).float()
        out = lbm_step(out, omega, solid, u_in, backend="cpp", **kw)
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=2e-6)
    multi = lbm_step(f, omega, solid, u_in, steps=3, backend="cpp", **kw)  # ping-pong inside one call
    torch.testing.assert_close(multi, out, rtol=0, atol=0)


@needs_cpp
@pytest.mark.parametrize("steps", [1, 2, 5])
def test_cpp_writes_every_cell(steps, rng):
    """The kernel fills a NaN-prefilled output completely, whatever the parity of ``steps``."""
    from dynadiff_fast.ops.lbm_step import cpp

    f, omega, solid, u_in = random_case(3, 6, 10, rng)
    out, scratch, args = cpp.kernel_args(f, omega, solid, u_in, steps, "trt", 0.25, 0.1, "inflow_outflow", "no_slip")
    out.fill_(float("nan"))
    scratch.fill_(float("nan"))
    _backend.require_extension().lbm_step_cpu(*args)
    assert torch.isfinite(out).all()
    ref = reference.lbm_step(f.double(), omega, solid, u_in, steps, "trt", 0.25, 0.1, "inflow_outflow", "no_slip")
    torch.testing.assert_close(out, ref.float(), rtol=1e-5, atol=2e-6)


@pytest.mark.gpu
@pytest.mark.parametrize("x_boundary,y_boundary", BOUNDARIES)
@pytest.mark.parametrize("collision,smagorinsky", [("bgk", 0.0), ("trt", 0.0), ("trt", 0.15)])
def test_cuda_matches_reference(x_boundary, y_boundary, collision, smagorinsky, rng):
    for n, h, w in [(1, 1, 2), (3, 7, 11), (2, 33, 257)]:
        f, omega, solid, u_in = random_case(n, h, w, rng)
        kw = dict(collision=collision, smagorinsky=smagorinsky, x_boundary=x_boundary, y_boundary=y_boundary)
        ref = lbm_step(f.double(), omega, solid, u_in, steps=4, backend="torch", **kw).float()
        dev = [t.cuda() for t in (f, omega, solid, u_in)]
        out = lbm_step(*dev, steps=4, backend="cuda", **kw).cpu()
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=2e-6)


def test_extension_has_cuda_symbol_when_built_with_cuda():
    ext = _backend.extension()
    if ext is None:
        pytest.skip("the C++ extension is not built")
    assert hasattr(ext, "lbm_step_cpu")
    if ext.cuda_build:
        assert hasattr(ext, "lbm_step_cuda")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised without a CUDA device")
def test_cuda_backend_without_device_raises_clearly(rng):
    f, omega, solid, u_in = random_case(1, 4, 4, rng)
    with pytest.raises(_backend.BackendUnavailable, match="lbm_step: backend='cuda' is unavailable"):
        lbm_step(f, omega, solid, u_in, backend="cuda")
    ext = _backend.extension()
    if ext is not None and ext.cuda_build:  # the launcher itself refuses too, naming the op
        from dynadiff_fast.ops.lbm_step import cpp

        _, _, args = cpp.kernel_args(f, omega, solid, u_in, 1, "bgk", 0.25, 0.0, "periodic", "periodic")
        with pytest.raises(RuntimeError, match="lbm_step: the CUDA backend needs a CUDA device"):
            ext.lbm_step_cuda(*args, 0)


@pytest.mark.parametrize("backend", ["torch", pytest.param("cpp", marks=needs_cpp)])
@pytest.mark.parametrize("y_boundary", reference.Y_BOUNDARIES)
def test_mass_is_conserved_without_inflow(backend, y_boundary, rng):
    """Periodic box, and channels with bounce-back/specular walls and obstacles: total mass is invariant."""
    n, h, w = 2, 12, 16
    f, omega, solid, _ = random_case(n, h, w, rng)
    if y_boundary == "periodic":
        solid.zero_()
    dtype = torch.float64 if backend == "torch" else torch.float32
    f = f.to(dtype)
    f = torch.where(solid[:, None], f.new_tensor(reference.WEIGHTS)[None, :, None, None], f)  # solids hold rest
    mass0 = f.double().sum(dim=(1, 2, 3))
    out = lbm_step(f, omega, solid, x_boundary="periodic", y_boundary=y_boundary, steps=50, backend=backend)
    mass = out.double().sum(dim=(1, 2, 3))
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(mass, mass0, rtol=tol, atol=0)


@pytest.mark.parametrize("collision", reference.COLLISIONS)
def test_equilibrium_is_a_fixed_point(collision, rng):
    n, h, w = 3, 5, 6
    rho = 1 + 0.1 * torch.rand(n, h, w, generator=rng, dtype=torch.float64)
    ux, uy = (0.1 * torch.randn(n, h, w, generator=rng, dtype=torch.float64) for _ in range(2))
    feq = equilibrium(rho, ux, uy)
    omega = torch.tensor([0.7, 1.3, 1.9], dtype=torch.float64)
    torch.testing.assert_close(reference.collide(feq, omega, collision, 0.25, 0.1), feq, rtol=1e-13, atol=1e-15)
    # a uniform equilibrium flow in a periodic box is a steady state of the whole step
    uniform = equilibrium(torch.ones(n, h, w), torch.full((n, h, w), 0.05), torch.full((n, h, w), -0.02))
    kw = dict(x_boundary="periodic", y_boundary="periodic", collision=collision)
    out = lbm_step(uniform, omega.float(), torch.zeros(n, h, w, dtype=torch.bool), steps=4, **kw)
    torch.testing.assert_close(out, uniform, rtol=1e-6, atol=1e-7)


def shear_wave_viscosity(h: int, tau: float, collision: str, backend: str, dtype=torch.float32) -> float:
    """Effective viscosity from the decay of u_x = U sin(k y), k = 2 pi / h, over a time that scales
    diffusively (h^2), measured as -ln(amplitude ratio) / (k^2 t)."""
    w, amp, steps = 3, 1e-3, 400 * (h // 32) ** 2
    k = 2 * math.pi / h
    y = torch.arange(h, dtype=torch.float64)[:, None].expand(h, w)
    ux = (amp * torch.sin(k * y))[None]
    f = equilibrium(torch.ones_like(ux), ux, torch.zeros_like(ux)).to(dtype)
    kw = dict(collision=collision, x_boundary="periodic", y_boundary="periodic", backend=backend)
    out = lbm_step(f, torch.tensor([1 / tau]), torch.zeros(1, h, w, dtype=torch.bool), steps=steps, **kw)
    _, ux_t, _ = macroscopic(out.double())
    mode = torch.sin(k * y[:, 0])
    ratio = float((ux_t[0, :, 0] * mode).sum() / (amp * mode.square().sum()))
    return -math.log(ratio) / (k * k * steps)


@pytest.mark.parametrize("backend", ["torch", pytest.param("cpp", marks=needs_cpp)])
@pytest.mark.parametrize("collision", reference.COLLISIONS)
@pytest.mark.parametrize("tau", [0.6, 0.9])
def test_shear_wave_decays_at_the_lattice_viscosity(backend, collision, tau):
    """u_x = U sin(k y) decays as exp(-nu k^2 t) with nu = (tau - 1/2) / 3 (exact for the linearised NS)."""
    nu = (tau - 0.5) / 3
    assert math.isclose(shear_wave_viscosity(32, tau, collision, backend), nu, rel_tol=0.02)


@pytest.mark.parametrize("collision", reference.COLLISIONS)
def test_shear_wave_viscosity_converges_at_second_order(collision):
    """The viscosity error shrinks ~4x per halving of the grid spacing (diffusive time scaling; float64,
    since float32 round-off of a 1e-3 wave over thousands of steps is of the size of the h=64 error)."""
    nu = (0.6 - 0.5) / 3
    errors = [abs(shear_wave_viscosity(h, 0.6, collision, "torch", torch.float64) / nu - 1) for h in (32, 64)]
    assert errors[1] < errors[0] / 3


@pytest.mark.parametrize("backend", ["torch", pytest.param("cpp", marks=needs_cpp)])
def test_inlet_imposes_the_velocity(backend, rng):
    f, omega, solid, u_in = random_case(2, 6, 8, rng)
    solid[..., :2] = False
    out = lbm_step(f, omega, solid, u_in, backend=backend, y_boundary="periodic")
    _, ux, uy = macroscopic(out.double())
    torch.testing.assert_close(ux[..., 0], u_in.double(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(uy[..., 0], torch.zeros_like(u_in.double()), rtol=0, atol=1e-6)


@needs_cpp
def test_opcheck(rng):
    f, omega, solid, u_in = random_case(2, 5, 7, rng)
    args = (f, omega, solid, u_in, 2, "trt", 0.25, 0.1, "inflow_outflow", "free_slip", "cpp")
    torch.library.opcheck(lbm_step_op, args)


def test_bad_inputs_raise_clear_errors(rng):
    f, omega, solid, u_in = random_case(2, 4, 5, rng)
    with pytest.raises(ValueError, match="omega: row 1 is 2"):
        lbm_step(f, torch.tensor([1.0, 2.0]), solid, u_in)
    with pytest.raises(ValueError, match=r"omega: expected shape \[2\]"):
        lbm_step(f, omega[:1], solid, u_in)
    with pytest.raises(ValueError, match="f: expected 9 populations"):
        lbm_step(f[:, :5], omega, solid, u_in)
    with pytest.raises(ValueError, match="solid: expected shape"):
        lbm_step(f, omega, solid[:, :2], u_in)
    with pytest.raises(ValueError, match="u_in: required"):
        lbm_step(f, omega, solid)
    with pytest.raises(ValueError, match="u_in: .*< 0.5"):
        lbm_step(f, omega, solid, u_in + 0.6)
    with pytest.raises(ValueError, match="collision: 'mrt' is not one of bgk, trt"):
        lbm_step(f, omega, solid, u_in, collision="mrt")
    with pytest.raises(ValueError, match="y_boundary"):
        lbm_step(f, omega, solid, u_in, y_boundary="slip")
    with pytest.raises(ValueError, match="steps: must be an int >= 1"):
        lbm_step(f, omega, solid, u_in, steps=0)
    with pytest.raises(ValueError, match="smagorinsky"):
        lbm_step(f, omega, solid, u_in, smagorinsky=-0.1)
    with pytest.raises(TypeError, match="f: dtype float16"):
        lbm_step(f.half(), omega, solid, u_in)
    with pytest.raises(TypeError, match="f: the cpp backend stores float32"):
        lbm_step(f.double(), omega, solid, u_in, backend="cpp")
    with pytest.raises(ValueError, match="omega: contains 1 NaN"):
        lbm_step(f, torch.tensor([1.0, float("nan")]), solid, u_in)
