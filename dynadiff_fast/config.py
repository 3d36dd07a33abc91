"""Configs: frozen dataclasses, loaded from YAML/TOML with dotted overrides, saved with every output.

Precedence (lowest first): dataclass defaults < config file < command-line flags < ``--set a.b=value``.
Unknown keys are errors that list the valid ones, so a typo never silently does nothing.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, get_type_hints

import yaml


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def read_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """Read a YAML (``.yaml``/``.yml``) or TOML (``.toml``) config file into a dict."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"config: {path} does not exist")
    text = path.read_text()
    if path.suffix == ".toml":
        import tomllib

        data = tomllib.loads(text)
    elif path.suffix in (".yaml", ".yml", ".json"):
        data = yaml.safe_load(text) or {}
    else:
        raise ValueError(f"config: {path} must end in .yaml, .yml, .toml or .json")
    if not isinstance(data, dict):
        raise ValueError(f"config: {path} must hold a mapping at top level, got {type(data).__name__}")
    return data


def parse_override(item: str) -> tuple[list[str], Any]:
    """``"vae.lr=3e-4"`` -> (["vae", "lr"], 0.0003); the value is parsed as YAML."""
    if "=" not in item:
        raise ValueError(f"override {item!r}: expected KEY=VALUE (e.g. train.lr=1e-4)")
    key, raw = item.split("=", 1)
    keys = key.strip().split(".")
    if not all(keys):
        raise ValueError(f"override {item!r}: empty key component")
    return keys, yaml.safe_load(raw)


def _set_nested(d: dict, keys: list[str], value: Any) -> None:
    for k in keys[:-1]:
        d = d.setdefault(k, {})
        if not isinstance(d, dict):
            raise ValueError(f"override {'.'.join(keys)}: {k} is not a section")
    d[keys[-1]] = value


def build(cls: type, data: Mapping[str, Any], where: str = "") -> Any:
    """Instantiate dataclass ``cls`` from a (nested) mapping, converting lists to tuples and
    recursing into nested dataclasses; unknown keys raise ``ValueError`` listing the valid keys."""
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
        elif isinstance(value, list):
            value = tuple(value)
        else:
            value = _coerce(value, tp, f"{where}.{name}".strip("."))
        kwargs[name] = value
    return cls(**kwargs)


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Numbers written the YAML-1.1 way (``3e-4`` is a string there) become the annotated float/int."""
    if isinstance(value, str) and tp in (float, int, float | None, int | None):
        target = float if tp in (float, float | None) else int
        try:
            return target(value)
        except ValueError:
            raise ValueError(f"config {key}: expected a {target.__name__}, got {value!r}") from None
    return value


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
