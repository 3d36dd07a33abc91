"""Baselines and DynaDiff behind one interface: ``run(ctx, task) -> {result_key: Adapted}`` (``common``).

Every method uses the same dataset, zoo and expert architecture; ``METHODS`` maps a method name to its
module, whose ``NAMES`` are the result keys it produces (``RESULT_KEYS``: all of them, in report order).
"""

from __future__ import annotations

import importlib

METHODS: dict[str, str] = {
    "dynadiff": "dynadiff_fast.baselines.dynadiff",
    "one_per_env": "dynadiff_fast.baselines.one_per_env",
    "base": "dynadiff_fast.baselines.base",
    "nn_prefix": "dynadiff_fast.baselines.nn_prefix",
    "soup": "dynadiff_fast.baselines.soup",
    "ccm": "dynadiff_fast.baselines.ccm",
    "param_conditioned": "dynadiff_fast.baselines.param_conditioned",
    "prefix_finetune": "dynadiff_fast.baselines.prefix_finetune",
    "context_adapt": "dynadiff_fast.baselines.context_adapt",
}


def method_module(name: str):
    if name not in METHODS:
        raise ValueError(f"method: unknown {name!r} (valid: {', '.join(METHODS)})")
    return importlib.import_module(METHODS[name])


def result_keys(methods=None) -> list[str]:
    """Result keys of ``methods`` (all when None), in report order."""
    return [k for m in (methods or METHODS) for k in method_module(m).NAMES]
