"""spectral_mix: every backend vs an fp64 reference (odd shapes), gradients, opcheck, bad input."""

import numpy as np
import pytest
import torch

from dynadiff_fast import _backend
from dynadiff_fast.ops.spectral_mix import OP, spectral_mix

CPU_BACKENDS = OP.usable("cpu")
# (E, B, I, O, modes): ones, odd sizes, several mode axes, O*M = 129 = Triton's BLOCK_Q + 1.
SHAPES = [
    (1, 1, 1, 1, (1,)),
    (3, 2, 7, 5, (7, 5)),
    (2, 5, 3, 1, (13,)),
    (1, 3, 2, 3, (43,)),
    (2, 1, 9, 4, (3, 2, 3)),
]
TINY = [(1, 1, 1, 1, (1,)), (2, 3, 2, 3, (3, 2))]


def _inputs(shape, dtype, gen):
    E, B, I, O, modes = shape
    x = torch.randn(E, B, I, *modes, dtype=dtype, generator=gen)
    w = torch.randn(E, I, O, *modes, dtype=dtype, generator=gen)
    return x, w


def _reference(x, w):
    """fp64 loop over experts, written independently of the backends."""
    return torch.stack([torch.einsum("bi...,io...->bo...", x[e], w[e]) for e in range(x.shape[0])]).cdouble()


def test_cpu_backends_present():
    assert "torch" in CPU_BACKENDS
    if _backend.extension() is not None:
        assert "cpp" in CPU_BACKENDS


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
@pytest.mark.parametrize("shape", SHAPES)
def test_backend_matches_fp64_reference(backend, dtype, shape, rng):
    if backend == "triton" and shape not in TINY and shape[-1] != (43,):
        pytest.skip("the Triton interpreter costs ~1 ms per program: a few shapes only")
    x, w = _inputs(shape, dtype, rng)
    out = spectral_mix(x, w, backend=backend)
    ref = _reference(x.cdouble(), w.cdouble())
    assert out.shape == ref.shape and out.dtype == dtype and out.is_contiguous()
    tol = 1e-12 if dtype == torch.complex128 else 1e-5
    assert ((out.cdouble() - ref).abs().max() / ref.abs().max().clamp_min(1e-30)).item() < tol


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_gradcheck(backend, rng):
    # The Triton interpreter is slow per launch: a smaller problem for it.
    x, w = _inputs((1, 2, 2, 1, (2,)) if backend == "triton" else TINY[1], torch.complex128, rng)
    x.requires_grad_(True)
    w.requires_grad_(True)
    fn = lambda a, b: spectral_mix(a, b, backend=backend)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, w), fast_mode=True)
    if backend != "triton":
        assert torch.autograd.gradgradcheck(fn, (x, w), fast_mode=True)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_backend_grads_match_reference(backend, rng):
    x, w = _inputs(SHAPES[1] if backend != "triton" else TINY[1], torch.complex64, rng)
    grads = []
    for b in ("torch", backend):
        xg, wg = x.clone().requires_grad_(True), w.clone().requires_grad_(True)
        out = spectral_mix(xg, wg, backend=b)
        (out.real.square().sum() + out.imag.sum()).backward()
        grads.append((xg.grad, wg.grad))
    for g_ref, g in zip(grads[0], grads[1]):
        torch.testing.assert_close(g, g_ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_opcheck(backend, rng):
    x, w = _inputs(TINY[1], torch.complex128, rng)
    torch.library.opcheck(torch.ops.dynadiff.spectral_mix.default, (x, w, backend))
    torch.library.opcheck(
        torch.ops.dynadiff.spectral_mix.default, (x.requires_grad_(True), w.requires_grad_(True), backend)
    )


def test_numpy_inputs_and_conjugate_views(rng):
    x, w = _inputs(SHAPES[1], torch.complex64, rng)
    out = spectral_mix(x.numpy(), np.ascontiguousarray(w.numpy()))
    torch.testing.assert_close(out, spectral_mix(x, w, backend="torch"))
    for backend in CPU_BACKENDS:  # lazy conjugate / transposed views (what the backward pass feeds)
        wt = w.conj().transpose(1, 2).contiguous().transpose(1, 2)
        torch.testing.assert_close(
            spectral_mix(x, wt.conj(), backend=backend), _reference(x, w).to(x.dtype), rtol=1e-5, atol=1e-5
        )


def test_bad_input(rng):
    x, w = _inputs(SHAPES[1], torch.complex64, rng)
    with pytest.raises(TypeError, match="x_ft: dtype"):
        spectral_mix(x.real, w)
    with pytest.raises(TypeError, match="differs"):
        spectral_mix(x, w.cdouble())
    with pytest.raises(ValueError, match="does not fit"):
        spectral_mix(x, w[:, :-1])
    with pytest.raises(ValueError, match="does not fit"):
        spectral_mix(x, w[:-1])
    with pytest.raises(ValueError, match="does not fit"):
        spectral_mix(x, w[..., :-1])
    with pytest.raises(ValueError, match="dims"):
        spectral_mix(x[0, 0, 0], w[0, 0, 0])
    with pytest.raises(ValueError, match="dims"):
        spectral_mix(x, w[0])
    with pytest.raises(_backend.BackendUnavailable if not torch.cuda.is_available() else ValueError):
        spectral_mix(x, w, backend="cuda")
    with pytest.raises(_backend.BackendUnavailable, match="unknown backend"):
        spectral_mix(x, w, backend="fortran")


def test_cuda_symbol_in_cuda_builds():
    C = _backend.extension()
    if C is None or not C.cuda_build:
        pytest.skip("extension built without CUDA")
    assert hasattr(C, "spectral_mix_cuda")


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["cuda", "triton"])
@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
def test_gpu_backends(backend, dtype, rng):
    for shape in SHAPES + [(300, 4, 64, 64, (8, 5))]:
        x, w = _inputs(shape, dtype, rng)
        out = spectral_mix(x.cuda(), w.cuda(), backend=backend).cpu()
        ref = _reference(x.cdouble(), w.cdouble())
        tol = 1e-12 if dtype == torch.complex128 else 1e-5
        assert ((out.cdouble() - ref).abs().max() / ref.abs().max()).item() < tol
