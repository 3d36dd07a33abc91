"""The ``dynadiff`` command line.

Every command is a stage (``dynadiff_fast/stages/``) whose module defines ``COMMAND``: a frozen config
dataclass plus a ``run(cfg)`` function. The CLI imports only the module of the command being run (so
``dynadiff --help`` is fast), turns the config's top-level fields into ``--flags``, and adds
``--config FILE`` (YAML/TOML) and ``--set key.sub=value`` overrides. It prints the resolved config;
commands save it beside their outputs with ``dynadiff_fast.config.save_resolved``.

Errors: a user error (a bad setting or input, a missing file; see ``is_user_error``) prints one line
``dynadiff CMD: error: MESSAGE`` to stderr and exits 2, like argparse's own errors; anything else is a bug
and keeps its traceback. ``--debug`` (before or after the command) keeps the traceback of every error.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import linecache
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_type_hints

from dynadiff_fast import config as config_mod

if TYPE_CHECKING:
    from dynadiff_fast.stages.common import Command


# command words -> (stage module, its one-line help). The module defines COMMAND: stages.common.Command.
COMMANDS: dict[tuple[str, ...], tuple[str, str]] = {
    ("info",): ("dynadiff_fast.stages.info", "print build, device and backend facts"),
    ("simulate",): ("dynadiff_fast.stages.simulate", "simulate a system's environments into an HDF5 dataset"),
    ("import",): ("dynadiff_fast.stages.import_data", "import gridded NetCDF/Zarr data (ERA5) as region environments"),
    ("zoo", "build"): ("dynadiff_fast.stages.zoo", "pretrain the base expert and fine-tune the expert zoo"),
    ("train", "vae"): ("dynadiff_fast.stages.train_vae", "train the weight VAE on a zoo"),
    ("train", "dit"): ("dynadiff_fast.stages.train_dit", "train the latent DiT + prompter"),
    ("train", "all"): ("dynadiff_fast.stages.train_all", "train the VAE, then the DiT"),
    ("generate",): ("dynadiff_fast.stages.generate", "generate expert weights from observed frames"),
    ("evaluate",): ("dynadiff_fast.stages.evaluate", "evaluate DynaDiff and the baselines on a dataset"),
    ("demo",): ("dynadiff_fast.stages.demo", "the whole pipeline on a small preset (the main job)"),
    ("benchmark",): ("dynadiff_fast.stages.benchmark", "the pipeline over several seeds, with statistics"),
    ("bench",): ("dynadiff_fast.stages.bench", "run the benchmarks in bench/ (kernel and solver speed)"),
}


def _top_help() -> str:
    lines = [
        "usage: dynadiff [--debug] COMMAND [options]   (dynadiff COMMAND --help for its options)",
        "",
        "  --debug        show the full traceback of any error",
        "",
        "commands:",
    ]
    for words, (_, text) in COMMANDS.items():
        lines.append(f"  {' '.join(words):<14} {text}")
    return "\n".join(lines)


def _flag_type(tp: Any, default: Any) -> dict[str, Any]:
    if tp is bool or isinstance(default, bool):
        return {"action": argparse.BooleanOptionalAction}
    if tp in (int, float, str):
        return {"type": tp}
    # tuples, lists, optionals, unions: parse the text as YAML (e.g. "[8, 8]", "null", "3"); the config
    # checks it against the field's type (tuples also take comma-separated values: "a,b").
    return {"type": _yaml_value}


def _yaml_value(text: str) -> Any:
    try:
        return config_mod.yaml_value(text)
    except ValueError as err:  # argparse reports ArgumentTypeError as "argument --flag: MESSAGE"
        raise argparse.ArgumentTypeError(str(err)) from None


def build_parser(words: Sequence[str], cmd: Command) -> argparse.ArgumentParser:
    _, help_text = COMMANDS[tuple(words)]
    p = argparse.ArgumentParser(
        prog="dynadiff " + " ".join(words),
        description=cmd.description or help_text,
    )
    p.add_argument("--config", default=None, help="YAML or TOML file with config values")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="dotted override, e.g. --set train.lr=1e-4 (repeatable)",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="do not print the resolved config")
    p.add_argument("--debug", action="store_true", help="show the full traceback of any error")
    hints = get_type_hints(cmd.config)
    for f in dataclasses.fields(cmd.config):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            continue  # nested sections are set with --set section.key=value or the config file
        default = f.default if f.default is not dataclasses.MISSING else None
        help_text = f.metadata.get("help", "")
        p.add_argument(
            "--" + f.name.replace("_", "-"),
            dest=f.name,
            default=None,
            help=f"{help_text} (default: {default!r})",
            # metadata nargs="+": a list option taking space-separated values (--files a.nc b.nc)
            **({"nargs": "+", "type": str} if f.metadata.get("nargs") == "+" else _flag_type(tp, default)),
        )
    return p


def _find_command(argv: Sequence[str]) -> tuple[tuple[str, ...], list[str]]:
    for n in (2, 1):
        words = tuple(argv[:n])
        if words in COMMANDS:
            return words, list(argv[n:])
    groups = sorted({w[0] for w in COMMANDS if len(w) > 1})
    if argv and argv[0] in groups:
        subs = [" ".join(w) for w in COMMANDS if w[0] == argv[0]]
        raise SystemExit(f"dynadiff {argv[0]}: expected one of: {', '.join(subs)}")
    raise SystemExit(f"dynadiff: unknown command {' '.join(argv[:1])!r}\n\n{_top_help()}")


_PACKAGE = Path(__file__).resolve().parent


def is_user_error(err: BaseException) -> bool:
    """True for errors the user fixes from the message alone: a missing file, or a ``ValueError``/``TypeError``
    raised by a ``raise`` statement of this package (its checks of settings and inputs name the argument, the
    value and what is allowed). The same types raised by a library, or by Python itself on a line of ours
    (``None + 1``), are bugs: their traceback is what a bug report needs."""
    if isinstance(err, FileNotFoundError):
        return True
    if not isinstance(err, ValueError | TypeError) or err.__traceback__ is None:
        return False
    tb = err.__traceback__
    while tb.tb_next is not None:
        tb = tb.tb_next
    filename = tb.tb_frame.f_code.co_filename
    if not Path(filename).resolve().is_relative_to(_PACKAGE):
        return False
    return linecache.getline(filename, tb.tb_lineno).lstrip().startswith("raise ")


def openmp_defaults() -> None:
    """Passive OpenMP waiting when the machine is already busy, unless the user chose a policy.

    libgomp's default spins at every barrier before it sleeps; beside another CPU-bound process each spinning
    thread holds a core the other process needs. ``bench/bench_busy.py`` (2 cores, one busy loop beside,
    2026-12-02): the default policy slows a BatchedFNO forward 1.8-5.3x, a fine-tuning step 2.6-3.0x and a
    Kolmogorov step 2.1-2.3x; ``OMP_WAIT_POLICY=PASSIVE`` 1.1-1.2x. On a quiet machine passive waiting costs
    1.5-1.8x on those ops (waking sleeping threads at every small parallel region), so it is chosen only when the
    1-minute load average at start says another process is running. Read when the OpenMP runtime loads: this
    runs before torch is imported. Set ``OMP_WAIT_POLICY`` yourself (ACTIVE or PASSIVE) to decide."""
    if "OMP_WAIT_POLICY" not in os.environ and os.getloadavg()[0] >= 1.0:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"


def main(argv: Sequence[str] | None = None) -> int:
    openmp_defaults()
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = bool(argv) and argv[0] == "--debug"
    if debug:
        argv = argv[1:]
    if not argv or argv[0] in ("-h", "--help"):
        print(_top_help())
        return 0
    if argv[0] in ("-V", "--version"):
        from dynadiff_fast import __version__

        print(__version__)
        return 0
    words, rest = _find_command(argv)
    module, _ = COMMANDS[words]
    cmd: Command = importlib.import_module(module).COMMAND
    args = build_parser(words, cmd).parse_args(rest)
    values = {f.name: getattr(args, f.name, None) for f in dataclasses.fields(cmd.config)}
    try:
        return _run(words, cmd, args, values)
    except Exception as err:
        if debug or args.debug or not is_user_error(err):
            raise
        print(f"dynadiff {' '.join(words)}: error: {str(err) or type(err).__name__}", file=sys.stderr)
        return 2


def _run(words: tuple[str, ...], cmd: Command, args: argparse.Namespace, values: dict[str, Any]) -> int:
    cfg = config_mod.load_config(cmd.config, args.config, args.overrides, values)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    if not args.quiet:
        print(f"# dynadiff {' '.join(words)}: resolved config\n" + config_mod.dump_yaml(cfg), flush=True)
    return int(cmd.run(cfg) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
