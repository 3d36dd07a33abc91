"""Progress of a long stage: a tqdm bar on a terminal, a log line now and then anywhere else.

Off a terminal (a job log, CI, ``nohup``, a pipe) a tqdm bar is either noise or, disabled, silence: a stage could
run for an hour with nothing in its log. ``bar`` returns tqdm when stderr is a terminal and otherwise a
``LogProgress``, which logs ``desc: n/total unit (p%), elapsed s, about s left [postfix]`` at most every
``every`` seconds and once at the end. Both take ``update``, ``set_postfix`` and ``close``.

    progress = bar(total=steps, initial=done, desc="train vae", unit="step", enabled=cfg.progress and is_main)
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

log = logging.getLogger("dynadiff.progress")

LOG_EVERY_S = 30.0


class LogProgress:
    """Periodic log lines with tqdm's ``update`` / ``set_postfix`` / ``close``."""

    def __init__(
        self, total: int | None, initial: int = 0, desc: str = "", unit: str = "it", every: float = LOG_EVERY_S
    ):
        self.total, self.n, self.desc, self.unit, self.every = total, initial, desc, unit, every
        self.postfix: dict[str, Any] = {}
        self._start_n, self._t0 = initial, time.monotonic()
        self._last = self._t0
        self._logged_n = initial

    def update(self, n: int = 1) -> None:
        self.n += n
        if time.monotonic() - self._last >= self.every:
            self._emit()

    def set_postfix(self, **values: Any) -> None:
        self.postfix = values

    def close(self) -> None:
        if self.n != self._logged_n:
            self._emit()

    def line(self) -> str:
        """The current progress line (what ``_emit`` logs)."""
        elapsed = time.monotonic() - self._t0
        done = f"{self.n}/{self.total}" if self.total else f"{self.n}"
        parts = [f"{self.desc}: {done} {self.unit}"]
        if self.total:
            parts.append(f"({100 * self.n / self.total:.0f}%)")
        parts.append(f"{elapsed:.0f} s")
        rate = (self.n - self._start_n) / elapsed if elapsed > 0 else 0.0
        if self.total and rate > 0 and self.n < self.total:
            parts.append(f"about {(self.total - self.n) / rate:.0f} s left")
        if self.postfix:
            parts.append(", ".join(f"{k}={v}" for k, v in self.postfix.items()))
        return " ".join(parts)

    def _emit(self) -> None:
        log.info("%s", self.line())
        self._last, self._logged_n = time.monotonic(), self.n


def bar(
    total: int | None = None, initial: int = 0, desc: str = "", unit: str = "it", enabled: bool = True, **tqdm_kwargs
):
    """A tqdm bar on a terminal, ``LogProgress`` elsewhere, a disabled tqdm when not ``enabled`` (``--no-progress``,
    or not rank 0)."""
    from tqdm.auto import tqdm

    if not enabled:
        return tqdm(total=total, disable=True)
    if sys.stderr.isatty():
        return tqdm(total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True, **tqdm_kwargs)
    return LogProgress(total, initial, desc, unit)
