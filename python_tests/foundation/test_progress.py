"""Progress off a terminal: periodic log lines with tqdm's interface; on a terminal a tqdm bar; nothing when
disabled."""

import logging

from dynadiff_fast import progress


def test_log_progress_lines(monkeypatch, caplog):
    clock = iter([0.0, 10.0, 70.0, 80.0, 80.0])  # init, update, update, the line's elapsed, the emit time
    monkeypatch.setattr(progress.time, "monotonic", lambda: next(clock))
    p = progress.LogProgress(total=100, initial=0, desc="train vae", unit="step", every=60.0)  # t0 = last = 0
    with caplog.at_level(logging.INFO, logger="dynadiff.progress"):
        p.update(10)  # t = 10: too soon, nothing logged
        assert not caplog.records
        p.set_postfix(loss="0.5")
        p.update(30)  # t = 70: a line
        assert len(caplog.records) == 1
        line = caplog.records[0].getMessage()
        assert (
            line.startswith("train vae: 40/100 step (40%) 80 s") and "about 120 s left" in line and "loss=0.5" in line
        )
        p.close()  # nothing new since the last line: no repeat
        assert len(caplog.records) == 1


def test_close_logs_the_last_state(caplog):
    p = progress.LogProgress(total=None, desc="simulate", unit="env", every=1e9)
    with caplog.at_level(logging.INFO, logger="dynadiff.progress"):
        p.update(3)
        p.close()
    assert [r.getMessage().split(" s")[0] for r in caplog.records] == ["simulate: 3 env 0"]


def test_bar_kinds(monkeypatch):
    monkeypatch.setattr(progress.sys.stderr, "isatty", lambda: False, raising=False)
    assert isinstance(progress.bar(10, desc="x"), progress.LogProgress)
    assert progress.bar(10, enabled=False).disable
    monkeypatch.setattr(progress.sys.stderr, "isatty", lambda: True, raising=False)
    assert not isinstance(progress.bar(10, desc="x"), progress.LogProgress)
