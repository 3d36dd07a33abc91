"""Lazy re-exports for package ``__init__`` files (PEP 562): ``import dynadiff_fast.x`` stays cheap and
a subpackage can name its public API before importing the heavy modules that define it."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_exports(package: str, names: dict[str, str]) -> Callable[[str], Any]:
    """Return a module ``__getattr__`` resolving ``names[attr]`` (a submodule of ``package``) on first use."""

    def __getattr__(attr: str) -> Any:
        if attr in names:
            module = importlib.import_module(f"{package}.{names[attr]}")
            return getattr(module, attr)
        raise AttributeError(f"module {package!r} has no attribute {attr!r}")

    return __getattr__
