"""The built extension, ``info()``, the CLI and the import-cost contract."""

import json
import subprocess
import sys

import pytest

import dynadiff_fast
from dynadiff_fast import cli

INFO_KEYS = {
    "version",
    "torch",
    "numpy",
    "neuraloperator",
    "cpp_extension",
    "cuda_build",
    "cuda_archs",
    "cuda_devices",
    "triton",
    "triton_interpreter",
    "nvtx",
    "backends",
}


def test_info_has_every_key_and_extension_is_built():
    facts = dynadiff_fast.info()
    assert INFO_KEYS <= set(facts)
    assert facts["cpp_extension"] is True
    from dynadiff_fast import _C

    assert facts["cuda_build"] == bool(_C.cuda_build)
    assert facts["cuda_devices"] == _C.cuda_device_count() or facts["cuda_devices"] >= 0
    if facts["cuda_build"]:
        assert facts["cuda_archs"] and "native" not in facts["cuda_archs"]
    for op, backends in facts["backends"].items():
        assert "torch" in backends, f"{op}: the torch reference must always be usable"


def test_cuda_device_count_without_gpu_is_zero():
    import torch

    from dynadiff_fast import _C

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    assert _C.cuda_device_count() == 0


def test_info_command_prints_json():
    out = subprocess.run(
        [sys.executable, "-m", "dynadiff_fast", "info", "--json", "-q"], capture_output=True, text=True, check=True
    )
    facts = json.loads(out.stdout)
    assert INFO_KEYS <= set(facts)


def test_top_level_help_lists_every_command(capsys):
    assert cli.main(["--help"]) == 0
    text = capsys.readouterr().out
    for words in cli.COMMANDS:
        assert " ".join(words) in text


def test_unknown_command_is_a_clear_error():
    with pytest.raises(SystemExit, match="unknown command 'simulatee'"):
        cli.main(["simulatee"])


def test_group_without_subcommand_lists_choices():
    with pytest.raises(SystemExit, match="zoo build"):
        cli.main(["zoo"])


def test_command_help_exits_zero(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["info", "--help"])
    assert exc.value.code == 0
    assert "--config" in capsys.readouterr().out


def test_unknown_override_key_names_valid_keys(capsys):
    assert cli.main(["info", "--set", "jsn=true"]) == 2
    assert capsys.readouterr().err.startswith("dynadiff info: error: config: unknown key(s) ['jsn']; valid: [")


def test_config_file_and_resolved_config_printed(tmp_path, capsys):
    cfg = tmp_path / "info.yaml"
    cfg.write_text("json: true\n")
    assert cli.main(["info", "--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "resolved config" in out and "json: true" in out


def test_import_is_lazy():
    """`import dynadiff_fast` must not pull in triton, cupy, neuraloperator or h5py (import cost)."""
    code = (
        "import sys, torch; before = set(sys.modules); import dynadiff_fast; "
        "heavy = [m for m in ('triton', 'cupy', 'neuralop', 'h5py', 'matplotlib') if m in sys.modules "
        "and m not in before]; print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
