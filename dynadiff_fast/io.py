"""Files that survive interruption: atomic writes (temp file + rename), checksums, JSON, safetensors.

Every long job writes through these, so an interrupted run never leaves a half-written file under
its final name, and a re-run can trust whatever it finds.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path, PurePath
from typing import Any


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it over ``path``, else delete it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        # mkstemp creates 0600, and some writers (safetensors) replace the file with their own 0600 temp file:
        # set the mode after writing, to what an ordinary open() gives.
        tmp.chmod(ordinary_mode())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def ordinary_mode(folder: bool = False) -> int:
    """The permissions a plain ``open()`` (0666) or ``mkdir()`` (0777) gives under the current umask; atomic
    writes create 0600/0700 temporaries (``tempfile``) and set this before the rename."""
    mask = os.umask(0)
    os.umask(mask)
    return (0o777 if folder else 0o666) & ~mask


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Atomically write ``obj`` as indented, strict JSON: a NaN/inf (which ``json`` would write as the invalid
    tokens ``NaN``/``Infinity``) is a ``ValueError`` naming the file and the key path of the first one."""
    try:
        text = json.dumps(obj, indent=2, sort_keys=False, default=_json_default, allow_nan=False)
    except ValueError:
        found = _first_nonfinite(obj)
        if found is None:
            raise
        raise ValueError(f"json: refusing to write {path}: {found[0]} is {found[1]} (JSON has no NaN/inf)") from None
    with atomic_path(path) as tmp:
        tmp.write_text(text + "\n")


def _first_nonfinite(obj: Any, where: str = "") -> tuple[str, float] | None:
    """``(key path, value)`` of the first NaN/inf in ``obj`` (``"a.b[2]"``; ``"(top level)"`` for a bare float),
    looking inside dicts, lists, tuples and arrays/tensors (``tolist``), or None when every number is finite."""
    if hasattr(obj, "tolist"):
        obj = obj.tolist()
    if isinstance(obj, float):
        return None if math.isfinite(obj) else (where or "(top level)", obj)
    if isinstance(obj, dict):
        items = [(f"{where}.{k}" if where else str(k), v) for k, v in obj.items()]
    elif isinstance(obj, list | tuple):
        items = [(f"{where}[{i}]", v) for i, v in enumerate(obj)]
    else:
        return None
    for key, value in items:
        found = _first_nonfinite(value, key)
        if found is not None:
            return found
    return None


def inside(root: str | os.PathLike, rel: Any, manifest: str | os.PathLike, entry: str) -> Path:
    """``root / rel`` for a path ``rel`` read from ``manifest`` (its ``entry``), refused (``ValueError``) when it is
    not a relative path inside ``root``: an absolute path or a ``..`` would read a file outside the run folder,
    and the checksum beside it in the same manifest cannot vouch for where the path points."""
    parts = PurePath(rel).parts if isinstance(rel, str) and rel else ()
    if not parts or PurePath(rel).is_absolute() or ".." in parts:
        raise ValueError(
            f"{manifest}: {entry} {rel!r} must be a relative path inside {root} (absolute paths and '..' are refused)"
        )
    return Path(root) / rel


def short_repr(value: Any, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters, for error messages that name a long recorded value."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def read_json(path: str | os.PathLike, what: str = "file") -> Any:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what}: {path} does not exist")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{what}: {path} is not valid JSON ({err}); the file is corrupt or truncated") from err


def _json_default(o: Any) -> Any:
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def verify_checksum(path: str | os.PathLike, expected: str, what: str = "file") -> None:
    """Raise ``ValueError`` when ``path``'s sha256 differs from ``expected`` (corrupt or truncated)."""
    actual = sha256_file(path)
    if actual != expected:
        raise ValueError(
            f"{what}: checksum mismatch for {path} (expected sha256 {expected[:12]}…, got {actual[:12]}…); "
            "the file is corrupt or truncated"
        )


def save_safetensors(path: str | os.PathLike, tensors: dict, metadata: dict[str, str] | None = None) -> str:
    """Atomically write a safetensors file; returns its sha256."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
        digest = sha256_file(tmp)
    return digest


def load_safetensors(path: str | os.PathLike, expected_sha256: str | None = None, what: str = "weights"):
    """Load a safetensors file (verifying its checksum when given) -> dict of tensors."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what}: {path} does not exist")
    if expected_sha256 is not None:
        verify_checksum(path, expected_sha256, what)
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as err:
        raise ValueError(f"{what}: {path} is not a readable safetensors file ({err})") from err


# ---- one writer per output -----------------------------------------------------------------------------------
LOCK_SUFFIX = ".dynadiff-lock"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


@contextlib.contextmanager
def output_lock(out: str | os.PathLike, what: str, enabled: bool = True) -> Iterator[Path | None]:
    """Hold the advisory lock of output ``out`` (a folder, or a file) while writing it (``enabled``: False on the
    ranks other than 0 of a torchrun job, which write under rank 0's lock).

    The lock is ``<out>.dynadiff-lock`` beside it, created exclusively and holding the writer's pid, host and
    ``what`` (the command). A second writer of the same output gets a one-line ``ValueError`` naming the holder;
    a lock left by a dead process on this host (kill -9, power loss) is taken over. Taking the lock also removes
    the orphan temporaries (``.<name>.*.tmp``, from ``atomic_path`` and checkpoint folders) that an interrupted
    writer of this output left inside it or beside it: while the lock is held nobody else writes them."""
    import shutil
    import socket
    import time

    if not enabled:
        yield None
        return
    out = Path(out)
    lock = out.with_name(out.name + LOCK_SUFFIX)
    try:
        lock.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:  # a user's path, not a bug: one line naming it
        raise ValueError(f"out: cannot create the folder {lock.parent} ({err.strerror or err})") from err
    me = {"pid": os.getpid(), "host": socket.gethostname(), "what": what, "since": time.strftime("%Y-%m-%dT%H:%M:%S")}
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                holder = json.loads(lock.read_text())
            except (OSError, ValueError):
                holder = {}  # torn by a crash while it was written: as stale as a dead pid
            if holder.get("pid") == me["pid"] and holder.get("host") == me["host"]:
                raise ValueError(
                    f"out: {out} is already being written by this process ({holder.get('what')})"
                ) from None
            if holder and (holder.get("host") != me["host"] or _pid_alive(int(holder["pid"]))):
                raise ValueError(
                    f"out: {out} is being written by {holder.get('what')} (pid {holder.get('pid')} on "
                    f"{holder.get('host')}, since {holder.get('since')}); wait for it to finish or choose another "
                    f"--out (a lock left by a crash on another host: delete {lock})"
                ) from None
            lock.unlink(missing_ok=True)  # stale: its writer is dead
            continue
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)
        break
    else:
        raise ValueError(f"out: could not take the lock {lock}")
    try:
        orphans = [*out.parent.glob(f".{out.name}.*.tmp"), *(out.rglob(".*.tmp") if out.is_dir() else ())]
        for tmp in orphans:
            shutil.rmtree(tmp) if tmp.is_dir() else tmp.unlink(missing_ok=True)
        yield lock
    finally:
        lock.unlink(missing_ok=True)
