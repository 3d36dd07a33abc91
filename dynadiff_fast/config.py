"""Configs: frozen dataclasses, loaded from YAML/TOML with dotted overrides, saved with every output.

Precedence (lowest first): dataclass defaults < config file < command-line flags < ``--set a.b=value``.
Unknown keys are errors that list the valid ones, so a typo never silently does nothing.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import sys
import types
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

import yaml


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def read_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """Read a YAML (``.yaml``/``.yml``) or TOML (``.toml``) config file into a dict."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"config: {path} does not exist")
    if path.suffix not in (".toml", ".yaml", ".yml", ".json"):
        raise ValueError(f"config: {path} must end in .yaml, .yml, .toml or .json")
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise ValueError(f"config: {path} is not a text file") from None
    if path.suffix == ".toml":
        import tomllib

        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as err:  # its message ends "(at line L, column C)"
            raise ValueError(f"config: {path}: not valid TOML: {err}") from None
    else:
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as err:
            raise ValueError(f"config: {path}{_yaml_where(err)}: not valid YAML: {_yaml_problem(err)}") from None
    if not isinstance(data, dict):
        raise ValueError(f"config: {path} must hold a mapping at top level, got {type(data).__name__}")
    return data


def _yaml_where(err: yaml.YAMLError) -> str:
    """`` line L, column C`` of a YAML error (PyYAML counts from 0), or "" when it carries no position."""
    mark = getattr(err, "problem_mark", None)
    return f" line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""


def _yaml_problem(err: yaml.YAMLError) -> str:
    """The one-line cause of a YAML error (its ``str`` spans several lines, quoting the source)."""
    return " ".join(p for p in (getattr(err, "context", None), getattr(err, "problem", None)) if p) or str(err)


def yaml_value(text: str) -> Any:
    """``text`` parsed as one YAML value (a flag or override); a syntax error is a one-line ``ValueError``."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ValueError(f"{text!r} is not valid YAML ({_yaml_problem(err)})") from None


def parse_override(item: str) -> tuple[list[str], Any]:
    """``"vae.lr=3e-4"`` -> (["vae", "lr"], 0.0003); the value is parsed as YAML."""
    if "=" not in item:
        raise ValueError(f"override {item!r}: expected KEY=VALUE (e.g. train.lr=1e-4)")
    key, raw = item.split("=", 1)
    keys = key.strip().split(".")
    if not all(keys):
        raise ValueError(f"override {item!r}: empty key component")
    try:
        return keys, yaml_value(raw)
    except ValueError as err:
        raise ValueError(f"override {key.strip()}: {err}") from None


def _set_nested(d: dict, keys: list[str], value: Any) -> None:
    for k in keys[:-1]:
        d = d.setdefault(k, {})
        if not isinstance(d, dict):
            raise ValueError(f"override {'.'.join(keys)}: {k} is not a section")
    d[keys[-1]] = value


def build(cls: type, data: Mapping[str, Any], where: str = "") -> Any:
    """Instantiate dataclass ``cls`` from a (nested) mapping, recursing into nested dataclasses and checking
    each value against its annotation (``_convert``); unknown keys raise ``ValueError`` listing the valid keys."""
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = set(data) - set(fields)
    if unknown:
        raise ValueError(
            f"config{(' ' + where) if where else ''}: unknown key(s) {sorted(unknown)}; valid: {sorted(fields)}"
        )
    kwargs = {}
    for name, value in data.items():
        tp = hints[name]
        if _is_dataclass_type(tp):
            if isinstance(value, Mapping):
                base = dataclasses.asdict(fields[name].default_factory()) if _has_factory(fields[name]) else {}
                base.update(value)
                value = build(tp, base, f"{where}.{name}".strip("."))
        else:
            value = _convert(value, tp, f"{where}.{name}".strip("."))
        kwargs[name] = value
    return cls(**kwargs)


# The scales every stage has a preset for: tiny (tests, one CPU core), bench (the informative CPU benchmark),
# small (a GPU workstation), paper (the paper's settings). Each stage keeps its own name -> dataclass table
# (DiT's model table is the model) and reads it through ``preset_of``; fields a stage's config leaves at None
# are taken from its preset by ``fill_unset``.
PRESETS = ("tiny", "bench", "small", "paper")


def preset_of(table: Mapping[str, Any], name: str, overrides: Mapping[str, Any] | None = None, what: str = "") -> Any:
    """``table[name]`` (a frozen dataclass) with ``overrides`` (``replace_checked``); an unknown name is a
    one-line ``ValueError`` listing the table's names."""
    if name not in table:
        raise ValueError(f"preset: unknown {name!r} (valid: {', '.join(table)})")
    return replace_checked(table[name], overrides, what)


def replace_checked(base: Any, overrides: Mapping[str, Any] | None, what: str = "") -> Any:
    """The dataclass ``base`` with ``overrides`` replacing fields, each checked against its annotation as a
    config value is (``build``); an unknown field is a one-line ``ValueError`` (``what`` names the section)."""
    if not overrides:
        return base
    fields = {f.name: getattr(base, f.name) for f in dataclasses.fields(base) if f.init}
    return build(type(base), {**fields, **overrides}, what)


def fill_unset(cfg: Any, preset: Any) -> Any:
    """``cfg`` with each field it leaves at None taken from the same-named field of the dataclass ``preset``."""
    filled = {f.name: getattr(preset, f.name) for f in dataclasses.fields(preset) if getattr(cfg, f.name) is None}
    return dataclasses.replace(cfg, **filled)


_SCALARS = (bool, int, float, str, type(None))


def _union_args(tp: Any) -> tuple:
    """``int | None`` -> ``(int, NoneType)``; any other annotation -> ``(tp,)``."""
    return get_args(tp) if get_origin(tp) in (Union, types.UnionType) else (tp,)


def _convert(value: Any, tp: Any, key: str) -> Any:
    """``value`` checked against the annotation ``tp`` of config field ``key``: scalars by ``_coerce``, tuples by
    ``_as_tuple``; other annotations (dicts, ``Any``, classes) are passed on, a list as a tuple (configs are frozen)."""
    args = _union_args(tp)
    if value is None and type(None) in args:
        return None
    tuples = [a for a in args if a is tuple or get_origin(a) is tuple]
    if tuples:
        return _as_tuple(value, tuples[0], key)
    if all(a in _SCALARS for a in args):
        return _coerce(value, args, key)
    return tuple(value) if isinstance(value, list) else value


def _coerce(value: Any, allowed: tuple, key: str) -> Any:
    """A scalar field's value, checked against its annotation ``allowed`` (e.g. ``(int, NoneType)``).

    A bool is never taken for a number (TOML ``n_frames = true`` is not 1) and a float never for an int
    (``--n-frames 2.5``): both are errors naming the field, the value and the type. An int is a valid float
    (kept as given). Numbers in text become the annotated int/float (YAML 1.1 reads ``3e-4`` as a string).
    """
    if type(value) in allowed or (type(value) is int and float in allowed):
        return value
    if isinstance(value, str):
        for target in (int, float):
            if target in allowed:
                try:
                    return target(value)
                except ValueError:
                    pass
    names = " or ".join("None" if t is type(None) else ("an " if t is int else "a ") + t.__name__ for t in allowed)
    raise ValueError(f"config {key}: expected {names}, got {value!r} ({type(value).__name__})")


def _as_tuple(value: Any, tp: Any, key: str) -> tuple:
    """A tuple field's value from a list, comma-separated text (``--methods one_per_env,base``) or one scalar
    (``--seeds 3``). Text is split on commas, never iterated character by character; each element is checked
    against the element annotation (``tuple[int, ...]``, or one per position for ``tuple[int, int]``)."""
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",")] if value.strip() else []
    elif value is None or isinstance(value, Mapping):
        raise ValueError(f"config {key}: expected a list or comma-separated values, got {value!r}")
    elif not isinstance(value, list | tuple):
        value = [value]
    args = get_args(tp)
    if not args:
        return tuple(value)
    if len(args) == 2 and args[1] is Ellipsis:
        args = (args[0],) * len(value)
    elif len(value) != len(args):
        raise ValueError(f"config {key}: expected {len(args)} values, got {len(value)}: {list(value)!r}")
    return tuple(_convert(v, t, f"{key}[{i}]") for i, (v, t) in enumerate(zip(value, args)))


def _has_factory(f: dataclasses.Field) -> bool:
    return f.default_factory is not dataclasses.MISSING


def load_config(
    cls: type,
    path: str | os.PathLike | None = None,
    overrides: Iterable[str] = (),
    values: Mapping[str, Any] | None = None,
) -> Any:
    """Resolve a config of type ``cls`` from its defaults, a file, explicit values and dotted overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        data.update(read_config_file(path))
    for k, v in (values or {}).items():
        if v is not None:
            data[k] = v
    for item in overrides:
        keys, value = parse_override(item)
        _set_nested(data, keys, value)
    return build(cls, data)


def to_dict(cfg: Any) -> dict[str, Any]:
    """A config as plain JSON/YAML-able data (tuples become lists)."""

    def conv(x):
        if isinstance(x, tuple | list):
            return [conv(v) for v in x]
        if isinstance(x, dict):
            return {k: conv(v) for k, v in x.items()}
        if isinstance(x, Path):
            return str(x)
        return x

    return conv(dataclasses.asdict(cfg))


def dump_yaml(cfg: Any) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def versions() -> dict[str, str]:
    """Versions recorded with every output (package, python, torch, numpy, neuraloperator)."""
    from importlib.metadata import PackageNotFoundError, version

    import numpy
    import torch

    from dynadiff_fast import __version__

    out = {
        "dynadiff_fast": __version__,
        "python": sys.version.split()[0],
        "torch": str(torch.__version__),
        "numpy": str(numpy.__version__),
        "platform": platform.platform(),
    }
    try:
        out["neuraloperator"] = version("neuraloperator")
    except PackageNotFoundError:
        out["neuraloperator"] = "absent"
    return out


def save_resolved(cfg: Any, path: str | os.PathLike, **extra: Any) -> None:
    """Write the resolved config (+ versions and any ``extra`` such as seed) atomically as YAML."""
    from dynadiff_fast.io import atomic_path

    doc = {"config": to_dict(cfg), "versions": versions(), **extra}
    with atomic_path(path) as tmp:
        tmp.write_text(yaml.safe_dump(doc, sort_keys=False))
