"""What every stage shares: its command-line entry, its device and process group, its progress bar and its
step log.

A stage module (``stages/<name>.py``) owns one command's whole story: its config dataclass and presets, its run
folder, resume and distributed set-up, and its ``COMMAND``. The library below (systems, data, experts,
weightspace, generative, baselines, eval) knows nothing of the command line.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dynadiff_fast import dist, io, progress

if TYPE_CHECKING:
    import torch

log = logging.getLogger("dynadiff.stages")

LOG_FILE = "log.jsonl"  # every training stage's step log: one JSON record with an integer "step" per line


@dataclass(frozen=True)
class Command:
    """A CLI command: a frozen config dataclass (its fields become ``--flags``) and ``run(cfg)``. Its one-line
    help is the CLI's command table (``cli.COMMANDS``), so ``dynadiff --help`` imports no stage."""

    config: type
    run: Callable[[Any], int | None]
    description: str = ""


def print_dataset(path: Path) -> int:
    """The end of the dataset-writing commands (simulate, import): the finished file's summary; exit status 0."""
    from dynadiff_fast.data.dataset import EnvDataset

    with EnvDataset(path) as ds:
        print(ds)
    return 0


def device_and_ranks(requested: str | None, batch_size: int | None = None) -> tuple[torch.device, dist.DistInfo]:
    """The stage's device and process group: ``requested`` resolved (``None``: CUDA when available), then the
    process group torchrun describes (a single process without it); under torchrun on CUDA each rank takes the
    GPU of its local rank. A global ``batch_size`` must split evenly over the ranks."""
    import torch

    from dynadiff_fast._backend import resolve_device

    device = resolve_device(requested)
    info = dist.init(device.type)
    if device.type == "cuda" and info.distributed:
        device = torch.device("cuda", info.local_rank)
    if batch_size is not None and batch_size % info.world_size:
        raise ValueError(f"batch_size: {batch_size} is not divisible by the {info.world_size} ranks")
    return device, info


def step_bar(total: int | None, initial: int, desc: str, enabled: bool, info: dist.DistInfo, unit: str = "step"):
    """The stage's progress bar, shown by rank 0 only."""
    return progress.bar(total, initial, desc, unit, enabled=enabled and info.is_main)


def append_log(path: Path, record: dict[str, Any]) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def truncate_log(path: Path, step: int) -> None:
    """Drop log lines past ``step`` (written after the checkpoint a resumed run restarts from), and a torn last
    line (a kill, a full disk or a power loss in the middle of writing it): the resumed run writes it again.
    A damaged line before the last one is not a torn write and stays an error naming the file and line."""
    if path.exists():
        lines = [ln for ln in path.read_text().splitlines() if ln]
        records = [_log_record(ln) for ln in lines]
        if records and records[-1] is None:
            log.warning("%s: dropping a torn last line %r", path, lines[-1][:80])
            lines, records = lines[:-1], records[:-1]
        if None in records:
            raise ValueError(f"log: {path} line {records.index(None) + 1} is not a JSON record with a step; "
                             "the log is corrupt (delete the line to resume)")  # fmt: skip
        keep = [ln for ln, rec in zip(lines, records) if rec["step"] <= step]
        with io.atomic_path(path) as tmp:
            tmp.write_text("".join(ln + "\n" for ln in keep))


def _log_record(line: str) -> dict | None:
    """One JSONL log line as a dict holding an integer ``step``, or None when it is not one (torn or corrupt)."""
    try:
        rec = json.loads(line)
    except json.JSONDecodeError:
        return None
    return rec if isinstance(rec, dict) and isinstance(rec.get("step"), int) else None
