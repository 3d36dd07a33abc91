"""Hot ops. Each op lives in its own subpackage ``dynadiff_fast/ops/<op>/``: ``reference.py`` (plain
torch, the truth every backend is tested against), ``cpp.py`` / ``cuda.py`` / ``triton.py`` backends
under the same function names, and ``__init__.py`` (``OP = _backend.hot_op(...)``, validation, dispatch,
NVTX range, ``torch.library`` registration).

``_backend.OP_MODULES`` lists the subpackages; importing this package imports each of them. Kernel
backends (triton, the extension) load only when first used.
"""

import importlib

from dynadiff_fast._backend import OP_MODULES

for _name in OP_MODULES:
    importlib.import_module(f"{__name__}.{_name}")
