"""CLI errors: a user error is one line ``dynadiff CMD: error: MESSAGE`` on stderr and exit code 2, wherever in
the command it is raised; a bug keeps its traceback; ``--debug`` keeps every traceback.

A stand-in command (this module's ``COMMAND``, registered as ``dynadiff boom``) raises what ``--mode`` says,
through real package code where the error is one of ours."""

import dataclasses
import subprocess
import sys

import pytest

from dynadiff_fast import cli, config, io
from dynadiff_fast.stages.common import Command


@dataclasses.dataclass(frozen=True)
class BoomConfig:
    mode: str = "ok"
    path: str = ""
    n: int | None = None
    methods: tuple[str, ...] = ()


SEEN = []


def _run(cfg):
    SEEN.append(cfg)
    if cfg.mode == "value":
        config.parse_override("no-equals-sign")  # a ValueError raised by our own check
    elif cfg.mode == "missing":
        io.read_json(cfg.path, "results")  # FileNotFoundError
    elif cfg.mode == "python-bug":
        return None + 1  # TypeError raised by Python on a line outside the package
    elif cfg.mode == "bug-in-package":
        io.sha256_file(None)  # TypeError raised by open() on a line of ours that is not a raise
    elif cfg.mode == "library":
        int("x")
    return 0


COMMAND = Command(config=BoomConfig, run=_run)


@pytest.fixture
def boom(monkeypatch):
    monkeypatch.setitem(cli.COMMANDS, ("boom",), (__name__, "test command"))
    SEEN.clear()
    return lambda *args: cli.main(["boom", "-q", *args])


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--mode", "value"], "override 'no-equals-sign': expected KEY=VALUE (e.g. train.lr=1e-4)"),
     (["--mode", "missing", "--path", "nowhere.json"], "results: nowhere.json does not exist"),
     (["--n", "2.5"], "config n: expected an int or None, got 2.5 (float)"),
     (["--set", "nn=1"], "config: unknown key(s) ['nn']; valid: ['methods', 'mode', 'n', 'path']")],
)  # fmt: skip
def test_user_errors_are_one_line_and_exit_2(boom, capsys, args, message):
    assert boom(*args) == 2
    assert capsys.readouterr().err == f"dynadiff boom: error: {message}\n"


def test_config_file_syntax_error_is_one_line(boom, capsys, tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("mode: [value\n")
    assert boom("--config", str(f)) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"dynadiff boom: error: config: {f} line 2") and err.count("\n") == 1


@pytest.mark.parametrize(("mode", "exc"), [("python-bug", TypeError), ("bug-in-package", TypeError),
                                           ("library", ValueError)])  # fmt: skip
def test_bugs_keep_their_traceback(boom, mode, exc):
    with pytest.raises(exc):
        boom("--mode", mode)


@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_keeps_the_traceback_of_user_errors(boom, where):
    argv = ["--debug", "boom", "--mode", "value"] if where == "before" else ["boom", "--mode", "value", "--debug"]
    with pytest.raises(ValueError, match="expected KEY=VALUE"):
        cli.main(argv)


def test_list_options_take_comma_separated_values(boom):
    assert boom("--methods", "one_per_env,base") == 0
    assert boom("--methods", "[a, b]") == 0
    assert boom("--methods", "base") == 0
    assert [c.methods for c in SEEN] == [("one_per_env", "base"), ("a", "b"), ("base",)]


def test_a_flag_that_is_not_yaml_is_an_argparse_error(boom, capsys):
    with pytest.raises(SystemExit) as exc:
        boom("--methods", "[a,")
    assert exc.value.code == 2
    assert "argument --methods: '[a,' is not valid YAML" in capsys.readouterr().err


def test_real_command_exit_code_and_single_line(tmp_path):
    out = tmp_path / "d.h5"
    proc = subprocess.run(
        [sys.executable, "-m", "dynadiff_fast", "simulate", "-q", "--n-train-traj", "0", "--out", str(out)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr == "dynadiff simulate: error: n_train_traj: expected an integer >= 1, got 0\n"
    assert not out.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "load,preset,expected",
    [(1.5, None, "PASSIVE"), (0.2, None, None), (1.5, "ACTIVE", "ACTIVE"), (0.2, "PASSIVE", "PASSIVE")],
)
def test_openmp_wait_policy_is_passive_only_on_a_busy_machine(monkeypatch, load, preset, expected):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    if preset is not None:
        monkeypatch.setenv("OMP_WAIT_POLICY", preset)
    monkeypatch.setattr(cli.os, "getloadavg", lambda: (load, load, load))
    cli.openmp_defaults()
    assert cli.os.environ.get("OMP_WAIT_POLICY") == expected
