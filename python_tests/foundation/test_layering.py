"""The package's floors: every import points down (or sideways, within a floor), never up.

From the bottom: the foundations (tensors, I/O, configs, distributed set-up, progress, profiling, backends, the
hot ops and the metrics), the physical systems, the datasets, the experts (configs, BatchedFNO/BatchedMLP, the
zoo), the weight space (graph, normalisation), the generative model (VAE, DiT, prompter, DynaDiff), the
evaluation protocol and its statistics, the baselines, the pipeline stages (each CLI command's whole story),
and the command line itself. A module may import from its own floor and the floors below it, lazily or not.
"""

from __future__ import annotations

import ast
from pathlib import Path

import dynadiff_fast

FLOORS = (
    ("_tensor", "_lazy", "io", "config", "state_dict", "dist", "progress", "profiling", "_backend", "ops", "metrics"),
    ("systems",),
    ("data",),
    ("experts",),
    ("weightspace",),
    ("generative",),
    ("eval",),
    ("baselines",),
    ("stages",),
    ("cli", "__main__", "__init__"),
)
ROOT = Path(dynadiff_fast.__file__).parent


def floor_of(module: str) -> int:
    """Floor of ``dynadiff_fast.<top>...`` by its top-level part (the package itself: the top floor)."""
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else "__init__"
    for i, names in enumerate(FLOORS):
        if top in names:
            return i
    raise AssertionError(f"{module}: its top-level part {top!r} is on no floor; add it to FLOORS")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(("dynadiff_fast", *parts))


def imported(tree: ast.AST) -> list[tuple[str, int]]:
    """Every ``dynadiff_fast`` module named by an import in ``tree`` (``from dynadiff_fast import x``: the
    submodule ``dynadiff_fast.x`` when one exists, else the package's lazy top-level names, which are not edges)."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names if a.name.split(".")[0] == "dynadiff_fast"]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "dynadiff_fast":
            if node.module == "dynadiff_fast":
                for a in node.names:
                    sub = ROOT / a.name
                    if sub.is_dir() or sub.with_suffix(".py").exists():
                        found.append((f"dynadiff_fast.{a.name}", node.lineno))
            else:
                found.append((node.module, node.lineno))
    return found


def upward_imports() -> list[str]:
    bad = []
    for path in sorted(ROOT.rglob("*.py")):
        here = module_name(path)
        if here == "dynadiff_fast":
            continue  # the package root resolves its public names lazily from every floor
        for target, line in imported(ast.parse(path.read_text())):
            if floor_of(target) > floor_of(here):
                bad.append(f"{path.relative_to(ROOT.parent)}:{line}: {here} imports {target}")
    return bad


def test_every_import_points_down():
    bad = upward_imports()
    assert not bad, "imports pointing up a floor:\n" + "\n".join(bad)


def test_every_top_level_module_is_on_a_floor():
    tops = {
        p.stem if p.is_file() else p.name for p in ROOT.iterdir() if p.suffix == ".py" or (p / "__init__.py").exists()
    }
    for top in tops:
        floor_of(f"dynadiff_fast.{top}")


def test_the_check_sees_an_upward_import():
    """The checker itself can fail: a library module importing a stage is reported."""
    tree = ast.parse("from dynadiff_fast.stages.zoo import build_zoo\nfrom dynadiff_fast import io\n")
    targets = [t for t, _ in imported(tree)]
    assert targets == ["dynadiff_fast.stages.zoo", "dynadiff_fast.io"]
    assert floor_of("dynadiff_fast.stages.zoo") > floor_of("dynadiff_fast.experts.zoo") > floor_of("dynadiff_fast.io")
