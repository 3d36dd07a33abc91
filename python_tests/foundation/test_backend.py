"""Backend dispatch: auto choice, clear errors for unavailable backends, registry rules."""

import pytest

from dynadiff_fast import _backend
from dynadiff_fast._backend import BackendUnavailable, HotOp


def _op(**kw):
    impls = {"torch": lambda: "torch", "cpp": lambda: "cpp", "cuda": lambda: "cuda", "triton": lambda: "triton"}
    return HotOp(name="demo_op", impls=impls, **kw)


def test_torch_reference_is_required():
    with pytest.raises(ValueError, match="torch reference"):
        HotOp(name="x", impls={"cpp": lambda: None})


def test_unknown_backend_in_impls_is_rejected():
    with pytest.raises(ValueError, match="unknown backends"):
        HotOp(name="x", impls={"torch": lambda: None, "rocm": lambda: None})


def test_auto_on_cpu_prefers_cpp_when_built():
    op = _op()
    expected = "cpp" if _backend.extension() is not None else "torch"
    assert op.resolve("auto", "cpu") == expected


def test_auto_falls_back_to_torch():
    op = HotOp(name="x", impls={"torch": lambda: "torch"})
    assert op.resolve("auto", "cpu") == "torch"
    assert op.resolve("auto", "cuda") == "torch"


def test_missing_cpp_symbol_is_reported():
    op = _op(cpp_symbol="definitely_not_built")
    with pytest.raises(BackendUnavailable, match="lacks definitely_not_built"):
        op.resolve("cpp", "cpu")
    assert op.resolve("auto", "cpu") == "torch"


def test_cuda_without_device_says_so(monkeypatch):
    monkeypatch.setattr(_backend, "cuda_device_count", lambda: 0)
    with pytest.raises(BackendUnavailable, match="cuda"):
        _op().resolve("cuda", "cpu")


def test_cpp_on_cuda_tensors_is_refused():
    with pytest.raises(BackendUnavailable, match="CPU tensors"):
        _op().resolve("cpp", "cuda")


def test_triton_on_cpu_needs_the_interpreter(monkeypatch):
    if _backend.triton_version() is None:
        pytest.skip("triton not installed")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(BackendUnavailable, match="TRITON_INTERPRET=1"):
        _op().resolve("triton", "cpu")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert _op().resolve("triton", "cpu") == "triton"
    # The interpreter is never an automatic choice on the CPU.
    assert _op().resolve("auto", "cpu") != "triton"


def test_unknown_backend_name_lists_valid_ones():
    with pytest.raises(BackendUnavailable, match="valid: auto, torch, cpp, cuda, triton"):
        _op().resolve("tpu", "cpu")


def test_registered_ops_have_usable_torch_backend():
    for name, backends in _backend.usable_backends().items():
        assert backends[0] == "torch", name


@pytest.mark.parametrize("count", [0, 2])
def test_resolve_device(monkeypatch, count):
    monkeypatch.setattr(_backend, "cuda_device_count", lambda: count)
    auto = "cuda" if count else "cpu"
    assert _backend.resolve_device(None).type == auto and _backend.resolve_device("auto").type == auto
    assert _backend.resolve_device("cpu").type == "cpu"
    if count:
        assert str(_backend.resolve_device("cuda:1")) == "cuda:1"
    for name in ("cuda", "cuda:0") if count == 0 else (f"cuda:{count}",):  # no device, or an index past the last
        with pytest.raises(ValueError, match=rf"device: '{name}' is not available .*pass --device cpu"):
            _backend.resolve_device(name)
    for name in ("tpu", "cuda:x", "CPU"):
        with pytest.raises(ValueError, match="expected cpu, cuda, cuda:i or auto"):
            _backend.resolve_device(name)
