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
    "ensembles": "dynadiff_fast.baselines.ensembles",
    "prefix_finetune_ensemble": "dynadiff_fast.baselines.prefix_ensemble",
}


def method_module(name: str):
    if name not in METHODS:
        raise ValueError(f"method: unknown {name!r} (valid: {', '.join(METHODS)})")
    return importlib.import_module(METHODS[name])


def result_keys(methods=None) -> list[str]:
    """Result keys of ``methods`` (all when None), in report order."""
    return [k for m in (methods or METHODS) for k in method_module(m).NAMES]


def resolve_methods(names=None) -> tuple[list[str], set[str] | None]:
    """Method names and/or result keys -> (method modules to run, result keys to keep; None: all of them).

    ``["ccm", "dynadiff_prefix"]`` runs the ccm and dynadiff modules and keeps ccm plus dynadiff's one variant
    (methods producing several keys, such as dynadiff's four, skip the variants not asked for)."""
    if not names:
        return list(METHODS), None
    owner = {key: m for m in METHODS for key in method_module(m).NAMES}
    modules, keys = [], set()
    for name in names:
        if name in METHODS:
            module, wanted = name, set(method_module(name).NAMES)
        elif name in owner:
            module, wanted = owner[name], {name}
        else:
            raise ValueError(f"methods: unknown {name!r} (valid: {', '.join(dict.fromkeys([*METHODS, *owner]))})")
        if module not in modules:
            modules.append(module)
        keys |= wanted
    return modules, keys
