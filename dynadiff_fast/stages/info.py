"""``dynadiff_fast.info()`` and ``dynadiff info``: what was built and what can run here."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version

from dynadiff_fast import _backend, profiling
from dynadiff_fast.stages.common import Command


def _dist_version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def info() -> dict:
    """Build, device and backend facts as a dict.

    Keys: version, torch, numpy, neuraloperator, cpp_extension, cuda_build, cuda_archs, nvcc,
    openmp, cuda_devices, triton, triton_interpreter, nvtx, backends (op name -> usable backends).
    """
    import numpy
    import torch

    from dynadiff_fast import __version__

    ext = _backend.extension()
    return {
        "version": __version__,
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "neuraloperator": _dist_version("neuraloperator"),
        "cpp_extension": ext is not None,
        "cuda_build": bool(ext is not None and ext.cuda_build),
        "cuda_archs": ext.cuda_archs.split(",") if ext is not None and ext.cuda_build else [],
        "nvcc": ext.nvcc_version if ext is not None and ext.cuda_build else None,
        "openmp": bool(ext is not None and ext.openmp),
        "cuda_devices": _backend.cuda_device_count(),
        "triton": _backend.triton_version(),
        "triton_interpreter": _backend.triton_interpreter(),
        "nvtx": profiling.enabled(),
        "backends": _backend.usable_backends(),
    }


@dataclass(frozen=True)
class InfoConfig:
    json: bool = field(default=False, metadata={"help": "print JSON instead of aligned text"})


def _run(cfg: InfoConfig) -> int:
    facts = info()
    if cfg.json:
        print(json.dumps(facts, indent=2))
        return 0
    width = max(map(len, facts))
    for k, v in facts.items():
        if k == "backends":
            print(f"{k:<{width}} :")
            for op, bs in v.items():
                print(f"  {op:<{width - 2}} : {', '.join(bs)}")
        else:
            print(f"{k:<{width}} : {v}")
    return 0


COMMAND = Command(config=InfoConfig, run=_run)
