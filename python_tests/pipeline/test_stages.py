"""Stage orchestration: finished stages are reused, changed or forced ones rerun, a broken output is redone."""

import pytest

from dynadiff_fast.stages.demo import STAGES, DemoConfig, build_stages, run_dir
from dynadiff_fast.stages.runner import Stage, marker_path, run_stages


def _stages(tmp_path, calls, config=None):
    def make(name):
        out = tmp_path / f"{name}.txt"

        def run():
            calls.append(name)
            out.write_text(name)

        return Stage(name, config or {"x": (1, 2)}, run, out.exists)

    return [make("a"), make("b")]


def test_finished_stages_are_reused(tmp_path):
    calls = []
    first = run_stages(tmp_path, _stages(tmp_path, calls))
    assert calls == ["a", "b"] and not any(r["reused"] for r in first)
    assert marker_path(tmp_path, "a").exists()
    again = run_stages(tmp_path, _stages(tmp_path, calls))
    assert calls == ["a", "b"] and all(r["reused"] for r in again)
    assert again[0]["seconds"] == first[0]["seconds"]


def test_changed_config_forced_or_missing_output_reruns(tmp_path):
    calls = []
    run_stages(tmp_path, _stages(tmp_path, calls))
    run_stages(tmp_path, _stages(tmp_path, calls, config={"x": 3}))
    assert calls == ["a", "b", "a", "b"]
    run_stages(tmp_path, _stages(tmp_path, calls, config={"x": 3}), force=("b",))
    assert calls[-1] == "b" and len(calls) == 5
    (tmp_path / "a.txt").unlink()  # the output vanished: the marker alone is not trusted
    run_stages(tmp_path, _stages(tmp_path, calls, config={"x": 3}))
    assert calls[-1] == "a" and len(calls) == 6
    with pytest.raises(ValueError, match="unknown stage"):
        run_stages(tmp_path, _stages(tmp_path, calls), force=("nope",))


def test_a_stage_that_leaves_no_output_fails(tmp_path):
    bad = Stage("bad", {}, lambda: None, lambda: False)
    with pytest.raises(RuntimeError, match="not readable"):
        run_stages(tmp_path, [bad])
    assert not marker_path(tmp_path, "bad").exists()


def test_demo_stage_list_and_layout(tmp_path):
    cfg = DemoConfig(out=str(tmp_path / "demo"))
    stages = build_stages(cfg)
    assert tuple(s.name for s in stages) == STAGES
    assert run_dir(DemoConfig()).as_posix() == "runs/demo/lambda_omega_bench"
    by_name = {s.name: s for s in stages}
    assert by_name["zoo"].config["data"] == by_name["vae"].config["data"] == str(tmp_path / "demo" / "data.h5")
    assert by_name["evaluate"].config["run"] == str(tmp_path / "demo" / "dynadiff")
    assert not any(s.ready() for s in stages)  # nothing built yet
