"""ns_stage / ns_advection: every available backend against the torch reference."""

import pytest
import torch

from dynadiff_fast import _backend
from dynadiff_fast.ops import ns_stage as op
from dynadiff_fast.ops.ns_stage import reference

BACKENDS = [b for b in ("cpp", "triton") if op.OP.unavailable_reason(b, "cpu") is None]
TOL = {torch.complex64: 2e-5, torch.complex128: 1e-12}


def _operands(n, F, H, W, dtype, *, per_row_decay, forcing, gen):
    Wr = W // 2 + 1
    real = torch.float32 if dtype == torch.complex64 else torch.float64

    def c(*shape):
        return torch.randn(*shape, dtype=torch.complex128, generator=gen).to(dtype)

    kx = torch.fft.rfftfreq(W, 1 / W, dtype=torch.float64).to(real) * 1.3
    ky = torch.fft.fftfreq(H, 1 / H, dtype=torch.float64).to(real) * 0.7
    mask = (torch.rand(H, Wr, generator=gen) > 0.3).to(real)
    decay = torch.rand(n if per_row_decay else 1, 1, H, Wr, generator=gen, dtype=torch.float64).to(real)
    f = {None: None, "shared": c(1, F, H, Wr), "per_row": c(n, F, H, Wr)}[forcing]
    return c(n, F, H, Wr), c(n, F, H, Wr), c(n, F, H, Wr), decay, kx, ky, mask, f


CASES = [  # n, F, H, W, velocity
    (1, 1, 4, 4, True),
    (7, 1, 6, 5, True),
    (3, 1, 8, 12, True),
    (2, 2, 5, 8, False),
    (5, 1, 16, 9, False),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
@pytest.mark.parametrize("n,F,H,W,velocity", CASES)
@pytest.mark.parametrize("layout", ["half", "packed"])
def test_stage_matches_reference(backend, dtype, n, F, H, W, velocity, layout, rng):
    if layout == "packed" and not velocity and (F % 2 or backend == "triton"):
        pytest.skip("packed pairs fields (F even); triton packs the velocity fields only")
    for stage in (1, 2, 3, 4):
        for per_row_decay, forcing in ((False, None), (True, "shared"), (False, "per_row")):
            q, v, acc, E, kx, ky, mask, f = _operands(
                n, F, H, W, dtype, per_row_decay=per_row_decay, forcing=forcing, gen=rng
            )
            want = reference.ns_stage(stage, q, v, acc, E, kx, ky, mask, 0.37, f, velocity, layout, W)
            got = op.ns_stage(stage, q, v, acc, E, kx, ky, mask, 0.37, f, velocity, layout, W, backend=backend)
            for w, g in zip(want, got):
                assert g.shape == w.shape and g.dtype == w.dtype
                torch.testing.assert_close(g, w, rtol=TOL[dtype], atol=TOL[dtype] / (1 if layout == "half" else H * W))


@pytest.mark.parametrize("H,W", [(6, 8), (5, 7)])
def test_packed_layout_is_the_forward_fft_of_field_pairs(H, W, rng):
    """fft2(packed) = a - i b for the real fields (a, b) whose half spectra were packed."""
    x = torch.randn(3, 4, H, W, dtype=torch.float64, generator=rng)
    z = torch.fft.fft2(reference.pack(torch.fft.rfft2(x), W))
    torch.testing.assert_close(z.real, x[:, 0::2])
    torch.testing.assert_close(z.imag, -x[:, 1::2])
    torch.testing.assert_close(reference.hermitian_full(torch.fft.rfft2(x), W), torch.fft.fft2(x))
    # The advection term reads the packed fields exactly like the plain ones.
    torch.testing.assert_close(op.ns_advection(z, backend="torch"), reference.ns_advection(x))


@pytest.mark.parametrize("backend", ["torch", *BACKENDS])
def test_stage_one_never_reads_acc(backend, rng):
    q, v, acc, E, kx, ky, mask, f = _operands(3, 1, 6, 6, torch.complex64, per_row_decay=True, forcing=None, gen=rng)
    acc_out, nxt = op.ns_stage(
        1, q, v, torch.full_like(acc, float("nan")), E, kx, ky, mask, 0.1, f, True, backend=backend
    )
    assert torch.isfinite(torch.view_as_real(acc_out)).all() and torch.isfinite(torch.view_as_real(nxt)).all()


def test_lawson_rk4_reproduces_the_exact_linear_step(rng):
    """For N = forcing (q = 0) the four stages give v' = E^2 v + dt/6 (E^2 + 4E + 1) f: Simpson's rule for
    the exact Duhamel integral, the defining property of the integrating-factor RK4 combination."""
    q, v, _, E, kx, ky, mask, f = _operands(2, 1, 6, 6, torch.complex128, per_row_decay=True, forcing="shared", gen=rng)
    q = torch.zeros_like(q)
    acc = v
    dt = 0.3
    for stage in (1, 2, 3, 4):
        acc, _ = op.ns_stage(stage, q, v, acc, E, kx, ky, mask, dt, f, False, backend="torch")
    torch.testing.assert_close(acc, E * E * v + dt / 6 * (E * E + 4 * E + 1) * f)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", [(1, 4, 3, 5), (7, 4, 6, 9), (2, 4, 33, 17)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.complex64, torch.complex128])
def test_advection_matches_reference(backend, shape, dtype, rng):
    if dtype.is_complex:
        shape = (shape[0], 2, *shape[2:])
    x = torch.randn(*shape, generator=rng, dtype=torch.complex128 if dtype.is_complex else torch.float64).to(dtype)
    got = op.ns_advection(x, backend=backend)
    assert got.dtype == x.real.dtype
    torch.testing.assert_close(got, reference.ns_advection(x))


def test_velocity_spectra_solve_poisson(rng):
    """u, v from the spectra satisfy div u = 0 and curl u = w, and w_x, w_y are the gradients."""
    H, W = 8, 10
    kx = torch.fft.rfftfreq(W, 1 / W, dtype=torch.float64)
    ky = torch.fft.fftfreq(H, 1 / H, dtype=torch.float64)
    w = torch.randn(2, 1, H, W // 2 + 1, dtype=torch.complex128, generator=rng)
    w[..., 0, 0] = 0
    u, v, wx, wy = op.velocity_spectra(w, kx, ky).unbind(1)
    KX, KY = kx[None, None, :], ky[None, :, None]
    torch.testing.assert_close(1j * KX * u + 1j * KY * v, torch.zeros_like(u))
    torch.testing.assert_close(1j * KX * v - 1j * KY * u, w[:, 0])
    torch.testing.assert_close(wx, 1j * KX * w[:, 0])
    torch.testing.assert_close(wy, 1j * KY * w[:, 0])


def test_bind_equals_public_op(rng):
    q, v, acc, E, kx, ky, mask, f = _operands(
        3, 1, 6, 6, torch.complex64, per_row_decay=False, forcing="per_row", gen=rng
    )
    stage_fn, advection_fn = op.bind("auto", "cpu")
    for layout in ("half", "packed"):
        got = stage_fn(2, q, v, acc, E, kx, ky, mask, 0.2, f, True, layout, 6)
        for a, b in zip(got, op.ns_stage(2, q, v, acc, E, kx, ky, mask, 0.2, f, True, layout)):
            torch.testing.assert_close(a, b)
    x = torch.randn(2, 4, 5, 6, generator=rng)
    torch.testing.assert_close(advection_fn(x), op.ns_advection(x))


def test_opcheck(rng):
    q, v, acc, E, kx, ky, mask, f = _operands(
        2, 1, 6, 6, torch.complex64, per_row_decay=True, forcing="shared", gen=rng
    )
    for layout in ("half", "packed"):
        torch.library.opcheck(op._ns_stage_op, (3, q, v, acc, E, kx, ky, mask, 0.1, f, True, layout, 6, "torch"))
    torch.library.opcheck(op._ns_advection_op, (torch.randn(2, 4, 5, 6, generator=rng), "torch"))


def test_bad_inputs_name_the_argument(rng):
    q, v, acc, E, kx, ky, mask, f = _operands(2, 1, 6, 6, torch.complex64, per_row_decay=True, forcing=None, gen=rng)
    with pytest.raises(ValueError, match="stage"):
        op.ns_stage(5, q, v, acc, E, kx, ky, mask, 0.1)
    with pytest.raises(TypeError, match="state_hat"):
        op.ns_stage(1, q, v.to(torch.complex128), acc, E, kx, ky, mask, 0.1)
    with pytest.raises(ValueError, match="acc"):
        op.ns_stage(1, q, v, acc[:1], E, kx, ky, mask, 0.1)
    with pytest.raises(ValueError, match="half_decay"):
        op.ns_stage(1, q, v, acc, E[..., :3], kx, ky, mask, 0.1)
    with pytest.raises(ValueError, match="velocity"):
        q2 = torch.cat([q, q], dim=1)
        op.ns_stage(1, q2, q2, q2, E, kx, ky, mask, 0.1, velocity=True)
    with pytest.raises(ValueError, match="dt"):
        op.ns_stage(1, q, v, acc, E, kx, ky, mask, -0.1)
    with pytest.raises(TypeError, match="nonlin_hat"):
        op.ns_stage(1, q.real, v, acc, E, kx, ky, mask, 0.1)
    with pytest.raises(ValueError, match="fields"):
        op.ns_advection(torch.zeros(2, 3, 4, 4))
    with pytest.raises(ValueError, match="layout"):
        op.ns_stage(1, q, v, acc, E, kx, ky, mask, 0.1, layout="full")
    with pytest.raises(ValueError, match="width"):
        op.ns_stage(1, q, v, acc, E, kx, ky, mask, 0.1, width=9)
    with pytest.raises(_backend.BackendUnavailable, match="cuda"):
        op.ns_stage(1, q, v, acc, E, kx, ky, mask, 0.1, backend="cuda")


def test_cpp_symbols_built():
    ext = _backend.extension()
    if ext is None:
        pytest.skip("extension not built")
    assert hasattr(ext, "ns_stage_cpu") and hasattr(ext, "ns_advection_cpu")
