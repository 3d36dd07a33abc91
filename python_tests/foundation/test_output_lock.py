"""The advisory lock on every stage's output: a second writer gets a one-line error naming the holder, a lock
left by a dead writer (or torn) is taken over, orphan temporaries of the output are removed, and the lock goes
away when the writer finishes or fails."""

import json
import os
import socket
import subprocess
import sys

import pytest

from dynadiff_fast import io


def _lock_of(out):
    return out.with_name(out.name + io.LOCK_SUFFIX)


def _write_lock(out, pid, host=None):
    _lock_of(out).write_text(json.dumps({"pid": pid, "host": host or socket.gethostname(), "what": "dynadiff zoo build",
                                         "since": "2026-12-02T00:00:00"}))  # fmt: skip


def test_second_writer_is_refused_naming_the_holder(tmp_path):
    out = tmp_path / "zoo"
    _write_lock(out, os.getppid())  # a live process that is not this one
    with pytest.raises(ValueError, match=rf"out: .*zoo is being written by dynadiff zoo build \(pid {os.getppid()}"):
        with io.output_lock(out, "dynadiff zoo build"):
            pass
    assert _lock_of(out).exists()  # the holder's lock is left alone
    _write_lock(out, os.getppid(), host="elsewhere")  # another host: cannot tell, so refuse and say how to clear
    with pytest.raises(ValueError, match="on another host: delete"):
        with io.output_lock(out, "x"):
            pass


def test_same_process_twice_is_refused(tmp_path):
    with io.output_lock(tmp_path / "run", "dynadiff train vae"):
        with pytest.raises(ValueError, match="already being written by this process"):
            with io.output_lock(tmp_path / "run", "dynadiff train vae"):
                pass


@pytest.mark.parametrize("torn", [False, True])
def test_stale_or_torn_lock_is_taken_over_and_orphans_removed(tmp_path, torn):
    out = tmp_path / "run"
    (out / "checkpoints" / ".step_00000200.abc.tmp").mkdir(parents=True)  # an interrupted checkpoint folder
    (out / ".log.jsonl.xyz.tmp").write_text("half")
    (tmp_path / ".run.q.tmp").write_text("beside")
    (tmp_path / ".other.q.tmp").write_text("another output's")
    (out / "log.jsonl").write_text("kept")
    if torn:
        _lock_of(out).write_text('{"pid": 12')
    else:
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        dead.wait()
        _write_lock(out, dead.pid)
    with io.output_lock(out, "dynadiff train vae") as lock:
        assert json.loads(lock.read_text())["pid"] == os.getpid()
        assert not list(out.rglob("*.tmp")) and not (tmp_path / ".run.q.tmp").exists()
        assert (tmp_path / ".other.q.tmp").exists() and (out / "log.jsonl").read_text() == "kept"
    assert not _lock_of(out).exists()


def test_lock_is_released_when_the_writer_fails(tmp_path):
    with pytest.raises(RuntimeError):
        with io.output_lock(tmp_path / "data.h5", "dynadiff simulate"):
            raise RuntimeError("boom")
    assert not _lock_of(tmp_path / "data.h5").exists()
    with io.output_lock(tmp_path / "data.h5", "dynadiff simulate", enabled=False) as lock:  # ranks > 0
        assert lock is None and not _lock_of(tmp_path / "data.h5").exists()


def test_cli_reports_a_held_output_in_one_line(tmp_path, capsys):
    from dynadiff_fast.cli import main

    out = tmp_path / "data.h5"
    _write_lock(out, os.getppid())
    code = main(["simulate", "-q", "--system", "lotka_volterra", "--out", str(out), "--n-frames", "2"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("dynadiff simulate: error: out: ") and err.count("\n") == 1
    assert not out.exists()
