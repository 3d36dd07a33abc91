"""``dynadiff bench``: run the benchmark scripts in ``bench/`` (each prints ratios measured in one run)."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from dynadiff_fast.cli import Command


@dataclass(frozen=True)
class BenchConfig:
    name: str = field(default="all", metadata={"help": "benchmark name (bench/bench_NAME.py) or 'all'"})
    dir: str = field(default="bench", metadata={"help": "folder holding bench_*.py (a source checkout)"})
    threads: int = field(default=1, metadata={"help": "CPU threads (benchmarks pin one by default)"})


def _run(cfg: BenchConfig) -> int:
    folder = Path(cfg.dir)
    if not folder.is_dir():
        raise SystemExit(f"bench: folder {folder} not found; run from a source checkout or pass --dir")
    scripts = sorted(folder.glob("bench_*.py"))
    if cfg.name != "all":
        scripts = [s for s in scripts if s.stem == f"bench_{cfg.name}"]
        if not scripts:
            names = ", ".join(s.stem[6:] for s in sorted(folder.glob("bench_*.py")))
            raise SystemExit(f"bench: no benchmark {cfg.name!r} in {folder} (have: {names})")
    env = dict(os.environ, OMP_NUM_THREADS=str(cfg.threads), MKL_NUM_THREADS=str(cfg.threads))
    code = 0
    for script in scripts:
        print(f"== {script.name}", flush=True)
        code |= subprocess.call([sys.executable, str(script), "--threads", str(cfg.threads)], env=env)
    return code


COMMAND = Command(help="run the benchmarks in bench/", config=BenchConfig, run=_run)
