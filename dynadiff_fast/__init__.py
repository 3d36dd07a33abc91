"""dynadiff_fast: generate expert neural-operator weights for unseen PDE environments (DynaDiff).

Importing the package is cheap: heavy parts (neuraloperator, triton, cupy, h5py) load on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# Public names resolved lazily (PEP 562) so `import dynadiff_fast` costs almost nothing over torch.
_LAZY = {
    "info": "dynadiff_fast.stages.info",
    "DynaDiff": "dynadiff_fast.generative.dynadiff",
    "get_system": "dynadiff_fast.systems",
    "list_systems": "dynadiff_fast.systems",
    "make_expert": "dynadiff_fast.experts",
    "BatchedFNO": "dynadiff_fast.experts",
    "WeightGraph": "dynadiff_fast.weightspace",
    "evaluate_experts": "dynadiff_fast.experts",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'dynadiff_fast' has no attribute {name!r}")
