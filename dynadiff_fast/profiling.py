"""NVTX ranges for Nsight Systems, in one domain ``dynadiff`` with slash-separated categories.

    from dynadiff_fast.profiling import nvtx_range, annotate
    with nvtx_range("sim/ns_step"): ...
    @annotate("zoo/finetune")
    def finetune(...): ...

The part before the first slash is the NVTX category (``sim``, ``zoo``, ``vae``, ``kernel``, ...).
Ranges cost (almost) nothing when no profiler is attached, are a shared no-op object when the
``nvtx`` package is absent, and ``DYNADIFF_NVTX=0`` turns them off. Profile a run with::

    nsys profile --trace=cuda,nvtx,osrt -o dynadiff_profile dynadiff demo
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable
from typing import Any

DOMAIN = "dynadiff"


def _load_nvtx():
    if os.environ.get("DYNADIFF_NVTX", "1") == "0":
        return None
    try:
        import nvtx
    except ImportError:
        return None
    return nvtx


_nvtx = _load_nvtx()
_NULL = contextlib.nullcontext()
_ranges: dict[str, Any] = {}


def enabled() -> bool:
    """True when ranges are emitted (the nvtx package is present and DYNADIFF_NVTX != 0)."""
    return _nvtx is not None


def nvtx_range(name: str):
    """Reusable context manager for range ``name`` (e.g. ``"kernel/spectral_mix"``); cached per name."""
    if _nvtx is None:
        return _NULL
    rng = _ranges.get(name)
    if rng is None:
        category = name.split("/", 1)[0]
        rng = _ranges[name] = _nvtx.annotate(message=name, domain=DOMAIN, category=category)
    return rng


def annotate(name: str) -> Callable[[Callable], Callable]:
    """Decorator wrapping a function in ``nvtx_range(name)``; returns the function itself when off."""

    def wrap(fn: Callable) -> Callable:
        if _nvtx is None:
            return fn

        @functools.wraps(fn)
        def inner(*args, **kwargs):
            with nvtx_range(name):
                return fn(*args, **kwargs)

        return inner

    return wrap
