"""Physical systems: batched solvers with one interface (see ``base.System``).

s = get_system("kolmogorov", resolution=32)
traj = s.simulate(params, n_frames=20)      # [n, T+1, C, H, W]
"""

from __future__ import annotations

import importlib

from dynadiff_fast.systems.base import System

# name -> (module, class). Modules are imported on first use.
_SYSTEMS: dict[str, tuple[str, str]] = {
    "navier_stokes": ("dynadiff_fast.systems.navier_stokes", "NavierStokes"),
    "kolmogorov": ("dynadiff_fast.systems.kolmogorov", "Kolmogorov"),
    "lambda_omega": ("dynadiff_fast.systems.lambda_omega", "LambdaOmega"),
    "cylinder_flow": ("dynadiff_fast.systems.cylinder_flow", "CylinderFlow"),
    "lotka_volterra": ("dynadiff_fast.systems.lotka_volterra", "LotkaVolterra"),
}

__all__ = ["System", "get_system", "list_systems", "system_class"]


def list_systems() -> list[str]:
    return list(_SYSTEMS)


def system_class(name: str) -> type[System]:
    if name not in _SYSTEMS:
        raise ValueError(f"system: unknown name {name!r} (valid: {', '.join(_SYSTEMS)})")
    module, cls = _SYSTEMS[name]
    return getattr(importlib.import_module(module), cls)


def get_system(name: str, **overrides) -> System:
    """Build system ``name`` with setting overrides (e.g. ``resolution=64``); unknown settings raise."""
    return system_class(name).from_overrides(**overrides)
