"""``dynadiff bench``: run the benchmark scripts in ``bench/`` (each prints ratios measured in one run), then one
table of every measured quantity that has a target (``report`` lines), beside its target.

A script states a result with a target by ``report(name, value, target, higher=True)``: it prints the human line
itself, and one ``#target {...}`` JSON line that ``dynadiff bench`` collects from its output.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from dynadiff_fast.stages.common import Command

TAG = "#target "


def report(name: str, value: float, target: float, higher: bool = True, unit: str = "x") -> None:
    """Print a measured ``value`` beside its ``target`` (``higher``: the value must reach it; else stay below)."""
    met = _met(value, target, higher)
    print(f"{TAG}{json.dumps({'name': name, 'value': value, 'target': target, 'higher': higher, 'unit': unit})}")
    print(f"  -> {name}: {value:.3g}{unit} (target {'>=' if higher else '<='} {target:g}{unit}) "
          f"{'met' if met else 'MISSED'}", flush=True)  # fmt: skip


def _met(value: float, target: float, higher: bool) -> bool:
    return value >= target if higher else value <= target


def summary_table(rows: list[dict]) -> str:
    """Markdown table of collected ``report`` rows."""
    lines = ["| benchmark | result | measured | target | |", "|---|---|---|---|---|"]
    for r in rows:
        met = _met(r["value"], r["target"], r["higher"])
        sign = ">=" if r["higher"] else "<="
        lines.append(f"| {r['script']} | {r['name']} | {r['value']:.3g}{r['unit']} | {sign} {r['target']:g}{r['unit']} "
                     f"| {'met' if met else '**missed**'} |")  # fmt: skip
    return "\n".join(lines)


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
    code, rows = 0, []
    for script in scripts:
        print(f"== {script.name}", flush=True)
        proc = subprocess.Popen([sys.executable, str(script), "--threads", str(cfg.threads)], env=env,
                                stdout=subprocess.PIPE, text=True)  # fmt: skip
        for line in proc.stdout:
            if line.startswith(TAG):
                rows.append({"script": script.stem[6:], **json.loads(line[len(TAG) :])})
            else:
                print(line, end="", flush=True)
        code |= proc.wait()
    if rows:
        print(f"\n== every result with a target, measured in this run ({cfg.threads} thread(s))")
        print(summary_table(rows))
    return code


COMMAND = Command(config=BenchConfig, run=_run)
