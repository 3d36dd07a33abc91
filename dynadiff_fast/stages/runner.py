"""Stage orchestration: run a list of stages in order, reusing the ones already finished.

A stage is a name, its config (plain data), a ``run()`` that produces its output, and a ``ready()`` check
that its final output exists and is readable. When a stage completes, a marker
``<root>/stages/<name>.json`` = ``{"config", "seconds", "finished"}`` is written atomically. On a re-run a
stage is reused when its marker exists, the marker's config equals the current one, and ``ready()``
holds; otherwise it runs again (the stages themselves resume from their own checkpoints, so an
interrupted stage continues rather than restarts).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dynadiff_fast import io

log = logging.getLogger("dynadiff.pipeline")


@dataclass
class Stage:
    name: str
    config: dict[str, Any]
    run: Callable[[], Any]
    ready: Callable[[], bool]


def marker_path(root: str | Path, name: str) -> Path:
    return Path(root) / "stages" / f"{name}.json"


def is_done(root: str | Path, stage: Stage) -> bool:
    """True when ``stage`` finished before with the same config and its output is still there."""
    path = marker_path(root, stage.name)
    if not path.exists():
        return False
    try:
        marker = io.read_json(path, f"stage marker {stage.name}")
    except ValueError:
        return False
    return marker.get("config") == _plain(stage.config) and stage.ready()


def _plain(obj: Any) -> Any:
    """JSON round trip, so configs compare as they are stored (tuples become lists)."""
    return json.loads(json.dumps(obj, default=str))


def run_stages(root: str | Path, stages: list[Stage], force: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """Run ``stages`` in order under ``root``; returns one record per stage:
    ``{"stage", "seconds", "reused"}`` (seconds: this run's wall-clock; the original run's when reused)."""
    unknown = set(force) - {s.name for s in stages} - {"all"}
    if unknown:
        raise ValueError(f"force: unknown stage(s) {sorted(unknown)} (stages: {', '.join(s.name for s in stages)})")
    records = []
    for stage in stages:
        forced = "all" in force or stage.name in force
        if not forced and is_done(root, stage):
            marker = io.read_json(marker_path(root, stage.name))
            log.info("stage %-9s reused (finished earlier in %.1f s)", stage.name, marker["seconds"])
            records.append({"stage": stage.name, "seconds": marker["seconds"], "reused": True})
            continue
        log.info("stage %-9s running", stage.name)
        t0 = time.perf_counter()
        stage.run()
        seconds = time.perf_counter() - t0
        if not stage.ready():
            raise RuntimeError(f"stage {stage.name}: finished but its output is not readable")
        io.write_json(
            marker_path(root, stage.name),
            {"config": _plain(stage.config), "seconds": seconds, "finished": time.strftime("%Y-%m-%dT%H:%M:%S")},
        )
        log.info("stage %-9s done in %.1f s", stage.name, seconds)
        records.append({"stage": stage.name, "seconds": seconds, "reused": False})
    return records
