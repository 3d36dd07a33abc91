"""Hot ops. Each op lives in its own subpackage ``dynadiff_fast/ops/<op>/``: ``reference.py`` (plain
torch, the truth every backend is tested against), ``cpp.py`` / ``cuda.py`` / ``triton.py`` backends,
and ``__init__.py`` (validation, dispatch, NVTX range, ``torch.library`` registration).

Importing this package imports every op subpackage, which registers it with ``_backend.REGISTRY``;
kernel backends (triton, the extension) load only when first used.
"""

import importlib
import pkgutil

OP_MODULES: tuple[str, ...] = tuple(
    sorted(m.name for m in pkgutil.iter_modules(__path__) if m.ispkg and not m.name.startswith("_"))
)

for _name in OP_MODULES:
    importlib.import_module(f"{__name__}.{_name}")
