"""``dynadiff bench`` runs each bench script and ends with one table of every result that has a target."""

import textwrap

from dynadiff_fast.stages.bench import BenchConfig, _run, summary_table


def test_results_with_targets_are_collected_into_one_table(tmp_path, capsys):
    for name, value in (("fast", 4.0), ("slow", 1.5)):
        (tmp_path / f"bench_{name}.py").write_text(
            textwrap.dedent(f"""
                from dynadiff_fast.stages.bench import report
                print("human line of {name}")
                report("{name} speed-up", {value}, 3.0)
                report("{name} memory", 0.5, 1.0, higher=False, unit=" GiB")
            """)
        )
    assert _run(BenchConfig(dir=str(tmp_path))) == 0
    out = capsys.readouterr().out
    assert "human line of fast" in out and "#target" not in out  # the machine lines are consumed
    table = out.split("every result with a target")[1]
    assert "| fast | fast speed-up | 4x | >= 3x | met |" in table
    assert "| slow | slow speed-up | 1.5x | >= 3x | **missed** |" in table
    assert table.count("0.5 GiB | <= 1 GiB | met") == 2


def test_summary_table_direction():
    rows = [{"script": "s", "name": "n", "value": 2.6, "target": 2.5, "higher": False, "unit": "x"}]
    assert "**missed**" in summary_table(rows)
    rows[0]["higher"] = True
    assert "| met |" in summary_table(rows)


def test_gpu_check_script_is_valid_and_names_its_steps():
    """bench/gpu_check.sh (run once on a GPU machine) parses and, dry, lists build, gpu tests and the bench."""
    import subprocess
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "bench" / "gpu_check.sh"
    out = subprocess.run(["bash", str(script), "--dry-run"], check=True, capture_output=True, text=True).stdout
    steps = [line for line in out.splitlines() if line.startswith("+ ")]
    assert "DYNADIFF_CUDA=ON" in steps[0] and "CMAKE_CUDA_ARCHITECTURES=90" in steps[0]
    assert any("-m gpu" in s for s in steps) and any("dynadiff bench" in s for s in steps)
