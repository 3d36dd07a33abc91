"""The hot-op registry: ``_backend.OP_MODULES`` names every op package, and each op package declares
its backends with ``_backend.hot_op`` (reference.py plus cpp/cuda/triton modules of the same names)."""

import importlib.util
import pkgutil
import subprocess
import sys

import dynadiff_fast.ops
from dynadiff_fast import _backend


def test_op_modules_lists_every_op_package():
    on_disk = sorted(m.name for m in pkgutil.iter_modules(dynadiff_fast.ops.__path__) if m.ispkg)
    assert list(_backend.OP_MODULES) == on_disk


def test_every_op_package_exposes_op_and_its_backend_modules():
    for name in _backend.OP_MODULES:
        package = importlib.import_module(f"dynadiff_fast.ops.{name}")
        assert isinstance(package.OP, _backend.HotOp), name
        for backend in package.OP.impls:
            spec = importlib.util.find_spec(f"{package.__name__}.{_backend.BACKEND_MODULES[backend]}")
            assert spec is not None, f"{name}: no module for its {backend} backend"


def test_usable_backends_needs_no_prior_import():
    """A fresh interpreter that imported only ``_backend`` still gets every op."""
    code = "from dynadiff_fast import _backend; print(','.join(_backend.usable_backends()))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    expected = {
        "lbm_step",
        "node_attention",
        "ns_advection",
        "ns_stage",
        "ragged_proj",
        "ragged_unproj",
        "ragged_wgrad",
        "spectral_mix",
    }
    assert set(out.stdout.strip().split(",")) == expected
