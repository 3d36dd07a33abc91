"""Configs (files, dotted overrides, errors), atomic files and checksums, tensor validation, NVTX."""

import dataclasses
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from dynadiff_fast import config, io, profiling
from dynadiff_fast._tensor import as_tensor, check_tensor, tensor_arg
from dynadiff_fast.dist import DistInfo, shard


@dataclasses.dataclass(frozen=True)
class Inner:
    lr: float = 1e-3
    steps: int = 10


@dataclasses.dataclass(frozen=True)
class Outer:
    name: str = "x"
    modes: tuple[int, int] = (8, 8)
    train: Inner = dataclasses.field(default_factory=Inner)


def test_defaults_file_values_and_overrides_in_order(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("name: fromfile\ntrain:\n  steps: 5\n")
    cfg = config.load_config(Outer, f, ["train.lr=3e-4", "modes=[12, 6]"], values={"name": "fromflag"})
    assert cfg == Outer(name="fromflag", modes=(12, 6), train=Inner(lr=3e-4, steps=5))


def test_toml_config(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('name = "t"\n[train]\nsteps = 3\n')
    assert config.load_config(Outer, f) == Outer(name="t", train=Inner(steps=3))


def test_unknown_nested_key_is_an_error():
    with pytest.raises(ValueError, match=r"config train: unknown key\(s\) \['lrr'\]"):
        config.load_config(Outer, overrides=["train.lrr=1"])


def test_bad_override_syntax():
    with pytest.raises(ValueError, match="expected KEY=VALUE"):
        config.load_config(Outer, overrides=["train.lr"])


def test_save_resolved_round_trip(tmp_path):
    import yaml

    path = tmp_path / "resolved.yaml"
    config.save_resolved(Outer(), path, seed=7)
    doc = yaml.safe_load(path.read_text())
    assert doc["config"]["modes"] == [8, 8] and doc["seed"] == 7 and "torch" in doc["versions"]


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.bin"
    with pytest.raises(RuntimeError):
        with io.atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("interrupted")
    assert not target.exists() and list(tmp_path.iterdir()) == []


def test_atomic_path_replaces_on_success(tmp_path):
    target = tmp_path / "out.json"
    io.write_json(target, {"a": np.arange(3)})
    assert io.read_json(target) == {"a": [0, 1, 2]}
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_corrupt_json_is_named(tmp_path):
    p = tmp_path / "m.json"
    p.write_text('{"a": ')
    with pytest.raises(ValueError, match="corrupt or truncated"):
        io.read_json(p, "manifest")


def test_safetensors_checksum_detects_truncation(tmp_path):
    p = tmp_path / "w.safetensors"
    digest = io.save_safetensors(p, {"w": torch.arange(100.0)})
    assert torch.equal(io.load_safetensors(p, digest)["w"], torch.arange(100.0))
    p.write_bytes(p.read_bytes()[:-8])
    with pytest.raises(ValueError, match="checksum mismatch"):
        io.load_safetensors(p, digest)


def test_numpy_arrays_come_in_without_copy():
    a = np.arange(6, dtype=np.float32)
    t = as_tensor(a, "x")
    t[0] = 42.0
    assert a[0] == 42.0


def test_as_tensor_rejects_lists():
    with pytest.raises(TypeError, match="x: expected a torch.Tensor, a NumPy or a CuPy array, got list"):
        as_tensor([1, 2], "x")


def test_check_tensor_errors_name_the_argument():
    t = torch.zeros(2, 3)
    with pytest.raises(TypeError, match="weight: dtype float32 not supported"):
        check_tensor(t, "weight", dtypes=(torch.complex64,))
    with pytest.raises(ValueError, match=r"weight: expected 4 dims, got shape \(2, 3\)"):
        check_tensor(t, "weight", ndim=4)
    with pytest.raises(ValueError, match="obs: contains 1 NaN/inf"):
        check_tensor(torch.tensor([1.0, float("nan")]), "obs", finite=True)


def test_tensor_arg_requires_contiguous():
    t = torch.zeros(4, 4).t()
    with pytest.raises(ValueError, match="contiguous"):
        tensor_arg(t, "x")
    ptr, shape, strides = tensor_arg(t.contiguous(), "x")
    assert shape == [4, 4] and strides == [4, 1] and ptr != 0


def test_nvtx_ranges_nest_and_decorate():
    @profiling.annotate("test/decorated")
    def f(x):
        with profiling.nvtx_range("test/inner"):
            return x + 1

    assert f(1) == 2
    assert profiling.nvtx_range("test/inner") is profiling.nvtx_range("test/inner")


def test_nvtx_can_be_turned_off():
    code = "from dynadiff_fast import profiling; print(profiling.enabled(), profiling.annotate('a/b')(len) is len)"
    env = dict(os.environ, DYNADIFF_NVTX="0")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.split() == ["False", "True"]


def test_shard_covers_every_item_once():
    items = list(range(11))
    parts = [shard(items, DistInfo(rank=r, world_size=3)) for r in range(3)]
    assert sorted(sum(parts, [])) == items


def test_atomic_files_get_ordinary_permissions(tmp_path):
    target = tmp_path / "perm.json"
    io.write_json(target, {})
    mask = os.umask(0)
    os.umask(mask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~mask


@dataclasses.dataclass(frozen=True)
class Typed:
    n_frames: int | None = None
    lr: float = 1e-3
    methods: tuple[str, ...] | None = None
    seeds: tuple[int, ...] = (0,)


@pytest.mark.parametrize("value", [2.5, 3.0, True])
def test_a_float_or_bool_where_an_int_belongs_names_field_value_and_type(value):
    with pytest.raises(ValueError, match=rf"config n_frames: expected an int or None, got {value!r} \("):
        config.build(Typed, {"n_frames": value})


def test_toml_bool_for_an_int_is_refused(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text("n_frames = true\n")
    with pytest.raises(ValueError, match=r"config n_frames: expected an int or None, got True \(bool\)"):
        config.load_config(Typed, f)
    assert config.load_config(Typed, values={"lr": 1, "n_frames": "4"}) == Typed(n_frames=4, lr=1)  # int is a float


@pytest.mark.parametrize(
    ("suffix", "text", "where"),
    [(".yaml", "name: x\nmodes: [1, 2\ntrain: {}\n", r"c\.yaml line 3, column 6: not valid YAML"),
     (".toml", 'name = "x"\nmodes = = 1\n', r"c\.toml: not valid TOML: .*line 2")],
)  # fmt: skip
def test_config_file_syntax_error_is_one_line_naming_file_and_line(tmp_path, suffix, text, where):
    f = tmp_path / f"c{suffix}"
    f.write_text(text)
    with pytest.raises(ValueError, match=where) as err:
        config.load_config(Outer, f)
    assert "\n" not in str(err.value)


def test_override_with_bad_yaml_is_one_line():
    with pytest.raises(ValueError, match=r"override modes: '\[1,' is not valid YAML") as err:
        config.load_config(Outer, overrides=["modes=[1,"])
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("one_per_env,base", ("one_per_env", "base")), ("one_per_env, base", ("one_per_env", "base")),
     ("base", ("base",)), (["a", "b"], ("a", "b")), (None, None)],
)  # fmt: skip
def test_tuple_fields_take_comma_separated_values_never_characters(value, expected):
    assert config.build(Typed, {"methods": value}).methods == expected


def test_tuple_elements_and_lengths_are_checked():
    assert config.build(Typed, {"seeds": "0, 1,2"}).seeds == (0, 1, 2)
    assert config.build(Typed, {"seeds": 3}).seeds == (3,)
    assert config.load_config(Outer, overrides=["modes=12,6"]).modes == (12, 6)
    with pytest.raises(ValueError, match=r"config seeds\[1\]: expected an int, got 'x'"):
        config.build(Typed, {"seeds": "0,x"})
    with pytest.raises(ValueError, match=r"config modes: expected 2 values, got 3"):
        config.build(Outer, {"modes": [1, 2, 3]})


def test_atomic_files_get_ordinary_permissions_whatever_the_writer(tmp_path):
    """safetensors writes its own temp file and renames it over ours (0600): the mode is set after writing."""
    target = tmp_path / "w.safetensors"
    io.save_safetensors(target, {"w": torch.zeros(2)})
    assert target.stat().st_mode & 0o777 == io.ordinary_mode()


def test_json_writer_refuses_nan_and_inf_naming_the_key_path(tmp_path):
    target = tmp_path / "r.json"
    with pytest.raises(ValueError, match=r"r\.json: scores\.env\[1\] is nan \(JSON has no NaN/inf\)"):
        io.write_json(target, {"ok": 1.0, "scores": {"env": [0.5, float("nan")]}})
    with pytest.raises(ValueError, match=r"stats\[2\] is inf"):
        io.write_json(target, {"stats": np.array([1.0, 2.0, np.inf])})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("rel", ["../../elsewhere/x.safetensors", "/etc/x.safetensors", "a/../../x", "", None])
def test_manifest_paths_must_stay_inside_the_run_folder(tmp_path, rel):
    with pytest.raises(ValueError, match=r"m\.json: shard .* must be a relative path inside"):
        io.inside(tmp_path, rel, tmp_path / "m.json", "shard")
    good = "experts/env_0001.safetensors"
    assert io.inside(tmp_path, good, "m.json", "shard") == tmp_path / good
