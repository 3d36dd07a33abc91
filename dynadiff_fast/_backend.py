"""Backend dispatch shared by every hot op.

Convention: each hot op takes ``backend="auto" | "torch" | "cpp" | "cuda" | "triton"``.
``torch`` is the plain reference and always available; ``auto`` picks the fastest backend usable
for the tensors' device (per-op preference order); naming an unavailable backend raises an error
that says what is missing.

Every hot op package ``dynadiff_fast/ops/<op>/`` declares its ops the same way, with ``hot_op``:
``reference.py`` holds the plain torch version of each op function and ``cpp.py`` / ``cuda.py`` /
``triton.py`` the fast ones under the same name and signature; dispatch is ``OP.resolve`` in the public
function and ``OP.impl`` in the custom op's body. ``OP_MODULES`` lists the packages, so ``hot_ops()``
(and ``dynadiff info``) knows every op without relying on who imported what.
"""

from __future__ import annotations

import functools
import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType

BACKENDS = ("torch", "cpp", "cuda", "triton")

# Default "auto" order per device type. Triton on the CPU only exists through the (slow) interpreter,
# so it is never an automatic choice there.
DEFAULT_PREFERENCE = {
    "cpu": ("cpp", "torch"),
    "cuda": ("cuda", "triton", "torch"),
}


class BackendUnavailable(RuntimeError):
    """A backend was requested by name but cannot run here."""


@functools.cache
def _extension() -> tuple[ModuleType | None, str | None]:
    try:
        return importlib.import_module("dynadiff_fast._C"), None
    except ImportError as err:  # a source checkout without a build, or a broken build
        return None, f"dynadiff_fast._C could not be imported ({err}); reinstall with `pip install .`"


def extension() -> ModuleType | None:
    """The compiled module ``dynadiff_fast._C``, or None when it is not built."""
    return _extension()[0]


def require_extension() -> ModuleType:
    mod, err = _extension()
    if mod is None:
        raise BackendUnavailable(err)
    return mod


@functools.cache
def triton_version() -> str | None:
    try:
        import triton
    except Exception:  # noqa: BLE001 - any failure means "no triton"
        return None
    return getattr(triton, "__version__", "unknown")


def triton_interpreter() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


@functools.cache
def cuda_device_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def resolve_device(name: str | None):
    """A stage's ``--device`` -> ``torch.device``: None or "auto" is CUDA when usable, else the CPU; "cpu";
    "cuda" / "cuda:i" only when that device exists here. Anything else is a one-line ``ValueError``."""
    import torch

    if name is None or name == "auto":
        return torch.device("cuda" if cuda_device_count() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or (name.startswith("cuda:") and name[5:].isdigit()):
        index = int(name[5:]) if ":" in name else 0
        if index >= cuda_device_count():
            why = f"torch {torch.__version__} is built without CUDA" if torch.version.cuda is None else (
                f"{cuda_device_count()} CUDA device(s) usable here")  # fmt: skip
            raise ValueError(f"device: {name!r} is not available ({why}); pass --device cpu")
        return torch.device(name)
    raise ValueError(f"device: expected cpu, cuda, cuda:i or auto, got {name!r}")


@dataclass
class HotOp:
    """A hot op with several implementations of the same math.

    Args:
        name: op name (``spectral_mix``, ``lbm_step``, ...).
        impls: backend name -> callable with the op's signature (minus ``backend``).
        cpp_symbol / cuda_symbol: attribute of ``_C`` the cpp / cuda impl needs.
        preference: device type -> "auto" order (defaults to ``DEFAULT_PREFERENCE``).
    """

    name: str
    impls: dict[str, Callable]
    cpp_symbol: str | None = None
    cuda_symbol: str | None = None
    preference: dict[str, tuple[str, ...]] = field(default_factory=lambda: dict(DEFAULT_PREFERENCE))

    def __post_init__(self) -> None:
        if "torch" not in self.impls:
            raise ValueError(f"hot op {self.name}: a torch reference implementation is required")
        unknown = set(self.impls) - set(BACKENDS)
        if unknown:
            raise ValueError(f"hot op {self.name}: unknown backends {sorted(unknown)} (valid: {BACKENDS})")

    def unavailable_reason(self, backend: str, device_type: str) -> str | None:
        """None when ``backend`` can run on ``device_type`` now, else what is missing."""
        if backend not in BACKENDS:
            return f"unknown backend {backend!r} (valid: auto, {', '.join(BACKENDS)})"
        if backend not in self.impls:
            return f"{self.name} has no {backend} implementation (has: {', '.join(self.impls)})"
        if backend == "torch":
            return None
        if backend == "cpp":
            if device_type != "cpu":
                return f"the cpp backend runs on CPU tensors, got {device_type} tensors"
            mod, err = _extension()
            if mod is None:
                return err
            if self.cpp_symbol and not hasattr(mod, self.cpp_symbol):
                return f"dynadiff_fast._C lacks {self.cpp_symbol}; rebuild the extension"
            return None
        if backend == "cuda":
            mod, err = _extension()
            if mod is None:
                return err
            if not mod.cuda_build:
                return "the extension was built without CUDA (reinstall with nvcc on PATH, DYNADIFF_CUDA=ON)"
            if self.cuda_symbol and not hasattr(mod, self.cuda_symbol):
                return f"dynadiff_fast._C lacks {self.cuda_symbol}; rebuild the extension"
            if cuda_device_count() == 0:
                return "the cuda backend needs a CUDA device, and none is visible"
            if device_type != "cuda":
                return f"the cuda backend runs on CUDA tensors, got {device_type} tensors"
            return None
        # triton
        if triton_version() is None:
            return "triton is not installed (pip install triton)"
        if device_type == "cuda":
            return None
        if triton_interpreter():
            return None
        return "triton on CPU tensors needs TRITON_INTERPRET=1 set before dynadiff_fast kernels are imported"

    def usable(self, device_type: str) -> list[str]:
        return [b for b in BACKENDS if b in self.impls and self.unavailable_reason(b, device_type) is None]

    def resolve(self, backend: str, device_type: str) -> str:
        """Backend name to run for tensors on ``device_type``; raises if the request cannot be met."""
        if backend == "auto":
            for b in self.preference.get(device_type, ("torch",)):
                if b in self.impls and self.unavailable_reason(b, device_type) is None:
                    return b
            return "torch"
        reason = self.unavailable_reason(backend, device_type)
        if reason is not None:
            raise BackendUnavailable(f"{self.name}: backend={backend!r} is unavailable: {reason}")
        return backend

    def impl(self, backend: str, device_type: str) -> Callable:
        return self.impls[self.resolve(backend, device_type)]


REGISTRY: dict[str, HotOp] = {}

# Every hot op package below dynadiff_fast/ops/ (importing one registers its ops with ``hot_op``).
OP_MODULES: tuple[str, ...] = ("lbm_step", "node_attention", "ns_stage", "ragged_proj", "spectral_mix")

# Backend name -> module of an op package that holds that backend's version of each op function.
BACKEND_MODULES = {"torch": "reference", "cpp": "cpp", "cuda": "cuda", "triton": "triton"}


def register(op: HotOp) -> HotOp:
    """Add a hot op to the registry that ``info()`` and ``dynadiff bench`` read."""
    REGISTRY[op.name] = op
    return op


def lazy(module: str, fn: str) -> Callable:
    """``module.fn``, imported on the first call (a backend module may import triton or need ``_C``)."""

    @functools.cache
    def target() -> Callable:
        return getattr(importlib.import_module(module), fn)

    def call(*args, **kwargs):
        return target()(*args, **kwargs)

    call.__qualname__ = call.__name__ = f"{module}.{fn}"
    return call


def hot_op(
    name: str,
    package: str,
    backends: tuple[str, ...],
    *,
    fn: str | None = None,
    cpp_symbol: str | None = None,
    cuda_symbol: str | None = None,
    listed: bool = True,
) -> HotOp:
    """Declare (and, when ``listed``, register) the hot op ``name`` of the op package ``package``.

    Backend ``b`` of ``backends`` runs ``<package>.<BACKEND_MODULES[b]>.<fn>`` (``fn`` defaults to
    ``name``): ``reference.py`` for torch, imported now (plain torch), and ``cpp.py`` / ``cuda.py`` /
    ``triton.py``, each imported when it first runs. ``listed=False``: a companion op (a backward run on
    the backend its forward resolved) that ``dynadiff info`` does not list.
    """
    unknown = set(backends) - set(BACKENDS)
    if unknown:
        raise ValueError(f"hot op {name}: unknown backends {sorted(unknown)} (valid: {BACKENDS})")
    fn = fn or name
    impls = {
        b: getattr(importlib.import_module(f"{package}.reference"), fn)
        if b == "torch"
        else lazy(f"{package}.{BACKEND_MODULES[b]}", fn)
        for b in BACKENDS
        if b in backends
    }
    op = HotOp(name=name, impls=impls, cpp_symbol=cpp_symbol, cuda_symbol=cuda_symbol)
    return register(op) if listed else op


def hot_ops() -> dict[str, HotOp]:
    """Every registered hot op by name, sorted: imports each package of ``OP_MODULES`` by name, which
    declares its ops (a no-op for those already imported)."""
    for module in OP_MODULES:
        importlib.import_module(f"dynadiff_fast.ops.{module}")
    return dict(sorted(REGISTRY.items()))


def usable_backends() -> dict[str, list[str]]:
    """op name -> backends usable right now on some device of this machine."""
    devices = ["cpu"] + (["cuda"] if cuda_device_count() else [])
    out = {}
    for name, op in hot_ops().items():
        seen: list[str] = []
        for dev in devices:
            seen += [b for b in op.usable(dev) if b not in seen]
        out[name] = seen
    return out
