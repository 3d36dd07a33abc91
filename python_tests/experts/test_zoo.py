"""The zoo end to end on a small exactly-known system: build, storage, resume, torchrun sharding, bad input.

A stand-in system (``Advect`` of python_tests/synthetic_systems.py: a band-limited random field translated by
``c`` grid cells per frame, ``c`` the environment parameter) replaces the PDE solvers: each environment's
dynamics differ in a way an FNO can represent exactly, so the base model (trained on all environments) must
average and every expert (fine-tuned on its own environment) must do better, which the build test asserts
against numbers computed in the same run.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from synthetic_systems import Advect, register

from dynadiff_fast.data.presets import DatasetPreset
from dynadiff_fast.experts.zoo import Zoo
from dynadiff_fast.stages import zoo as zoo_build
from dynadiff_fast.stages.simulate import make_dataset

SMALL_EXPERT = {"hidden_channels": 8, "n_layers": 2, "n_modes": [6, 6], "lifting_channel_ratio": 1}
ADVECT = DatasetPreset(((0.0, 2.0, 6),), 3, 4, 2, 8, out_fraction=0.0)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    register(mp, Advect, ADVECT)
    path = make_dataset("advect", "tiny", out=str(tmp_path_factory.mktemp("data") / "advect.h5"), progress=False)
    yield path
    mp.undo()


def _cfg(data, out, **kw):
    base = dict(
        data=str(data), out=str(out), experts_per_env=2, preset="tiny", pretrain_epochs=4, finetune_epochs=4,
        lr=3e-3, finetune_lr=3e-3, batch_size=8, val_rollout_steps=3, envs_per_step=2, expert=SMALL_EXPERT,
        progress=False,
    )  # fmt: skip
    base.update(kw)
    return zoo_build.ZooBuildConfig(**base)


@pytest.fixture(scope="module")
def built(dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("zoo") / "z"
    zoo_build.build_zoo(_cfg(dataset, out))
    return out


def test_build_writes_a_complete_zoo(built, dataset):
    from dynadiff_fast.data import EnvDataset

    zoo = Zoo.open(built)
    with EnvDataset.open(dataset) as ds:
        seen = ds.split["seen"].tolist()
        assert len(zoo) == 2 * len(seen)
        assert zoo.env_index.tolist() == [e for e in seen for _ in range(2)]
        assert torch.equal(zoo.params, ds.params[zoo.env_index])
        assert zoo.system_name == ds.system_name
        assert zoo.dataset_info["param_names"] == list(ds.param_names)
        assert zoo.dataset_info["mean"] == ds.mean.tolist()
    assert (built / "config.yaml").exists()
    m = json.loads((built / "manifest.json").read_text())
    for rec in m["experts"]:
        assert rec["noise_layer"] and rec["noise_sigma"] > 0 and len(rec["train_loss"]) == 4
    # Each expert is its own: noise and fine-tuning made them differ from the base and from each other.
    w = zoo.batched().stacked()
    base = zoo.base_module().state_dict()
    key = "fno_blocks.convs.0.weight.tensor"
    assert not torch.allclose(w[key][0], w[key][1]) and not torch.allclose(w[key][0], base[key])


def test_experts_beat_the_base_on_their_own_environment(built, dataset):
    """The zoo's reason to exist, measured again here (not trusting the manifest): on each seen
    environment's held-out test trajectories, the experts' rollout RMSE is below the base model's."""
    from dynadiff_fast.data import EnvDataset
    from dynadiff_fast.experts.batched_fno import BatchedFNO

    zoo = Zoo.open(built)
    base = BatchedFNO.from_modules([zoo.base_module()])
    with EnvDataset.open(dataset) as ds:
        for env in ds.split["seen"].tolist():
            test = ds.test([env])[0]
            idx = zoo.indices(env)
            experts, _ = zoo_build.validate(zoo.batched(idx), test, 3)
            base_rmse, _ = zoo_build.validate(base, test, 3)
            assert torch.allclose(experts, zoo.val_rmse[idx], rtol=1e-4)
            assert bool((experts < base_rmse).all()), (env, experts.tolist(), base_rmse.tolist())


def test_loaded_modules_equal_the_batched_experts(built):
    zoo = Zoo.open(built)
    x = torch.randn(2, 1, 16, 16)
    batched = zoo.batched([3, 0])(x)
    for j, i in enumerate([3, 0]):
        torch.testing.assert_close(zoo.load_module(i)(x), batched[j], rtol=1e-4, atol=1e-5)


def test_rerun_keeps_finished_work(built, dataset):
    before = {p.name: p.stat().st_mtime_ns for p in (built / "experts").iterdir()}
    base_mtime = (built / "base.safetensors").stat().st_mtime_ns
    zoo_build.build_zoo(_cfg(dataset, built, envs_per_step=1))  # how it is computed may change
    assert {p.name: p.stat().st_mtime_ns for p in (built / "experts").iterdir()} == before
    assert (built / "base.safetensors").stat().st_mtime_ns == base_mtime


def test_resume_after_interruption_gives_the_same_zoo(built, dataset, tmp_path, monkeypatch):
    """Kill the build after its first environment group; the re-run finishes it, and the result equals an
    uninterrupted build (experts are seeded per (env, k), independent of grouping)."""
    out = tmp_path / "z"
    real = zoo_build.finetune_group
    calls = []

    def dies_second_time(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(zoo_build, "finetune_group", dies_second_time)
    with pytest.raises(KeyboardInterrupt):
        zoo_build.build_zoo(_cfg(dataset, out, envs_per_step=1))
    assert not (out / "manifest.json").exists()
    assert not list(out.rglob("*.tmp"))
    monkeypatch.setattr(zoo_build, "finetune_group", real)
    zoo_build.build_zoo(_cfg(dataset, out, envs_per_step=1))
    a, b = Zoo.open(out), Zoo.open(built)
    torch.testing.assert_close(a.batched().stacked(), b.batched().stacked(), rtol=1e-4, atol=1e-5)


def test_corrupt_shard_is_detected_and_rebuilt(built, dataset, tmp_path):
    import shutil

    out = tmp_path / "z"
    shutil.copytree(built, out)
    shard = sorted((out / "experts").glob("*.safetensors"))[0]
    shard.write_bytes(shard.read_bytes()[:-100])  # truncated
    zoo = Zoo.open(out)
    with pytest.raises(ValueError, match="checksum mismatch"):
        zoo.batched()
    zoo_build.build_zoo(_cfg(dataset, out))  # the re-run redoes that environment only
    Zoo.open(out).batched()


def test_resume_with_other_data_or_settings_is_refused(built, dataset, tmp_path):
    mp = pytest.MonkeyPatch()
    register(mp, Advect, ADVECT)
    try:
        other = make_dataset("advect", "tiny", out=str(tmp_path / "other.h5"), seed=1, progress=False)
    finally:
        mp.undo()
    files = sorted(p.name for p in built.rglob("*"))
    with pytest.raises(ValueError, match="dataset.split|dataset.mean|dataset.seed"):
        zoo_build.build_zoo(_cfg(other, built))
    with pytest.raises(ValueError, match="expert_config.hidden_channels"):
        zoo_build.build_zoo(_cfg(dataset, built, expert={**SMALL_EXPERT, "hidden_channels": 4}))
    with pytest.raises(ValueError, match="settings.experts_per_env"):
        zoo_build.build_zoo(_cfg(dataset, built, experts_per_env=3))
    assert sorted(p.name for p in built.rglob("*")) == files


def test_open_rejects_foreign_or_mismatched_zoos(built, tmp_path):
    import shutil

    with pytest.raises(FileNotFoundError):
        Zoo.open(tmp_path)
    out = tmp_path / "z"
    shutil.copytree(built, out)
    m = json.loads((out / "manifest.json").read_text())
    m["expert_config"]["hidden_channels"] = 4
    (out / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ValueError, match="do not fit its expert_config"):
        Zoo.open(out)
    (out / "manifest.json").write_text(json.dumps(m)[:-20])
    with pytest.raises(ValueError, match="corrupt or truncated"):
        Zoo.open(out)
    with pytest.raises(IndexError):
        Zoo.open(built).load_module(100)


@pytest.mark.parametrize(
    ("entry", "bad"),
    [("shard", "../../elsewhere/x.safetensors"), ("shard", "/abs/x.safetensors"), ("base file", "../base.safetensors")],
)
def test_manifest_paths_outside_the_zoo_are_refused(built, tmp_path, entry, bad):
    """The checksum sits in the same manifest, so it cannot vouch for a path that leaves the zoo folder."""
    import shutil

    out = tmp_path / "z"
    shutil.copytree(built, out)
    m = json.loads((out / "manifest.json").read_text())
    if entry == "shard":
        old = m["experts"][0]["shard"]
        m["shards"][bad] = m["shards"].pop(old)
        for rec in m["experts"]:
            rec["shard"] = bad if rec["shard"] == old else rec["shard"]
    else:
        m["base"]["file"] = bad
    (out / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ValueError, match=rf"manifest\.json: {entry} '{re.escape(bad)}' must be a relative path inside"):
        Zoo.open(out)


def test_an_expert_shard_without_a_checksum_entry_is_refused(built, tmp_path):
    import shutil

    out = tmp_path / "z"
    shutil.copytree(built, out)
    m = json.loads((out / "manifest.json").read_text())
    m["experts"][0]["shard"] = "experts/unlisted.safetensors"
    (out / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ValueError, match="expert 0 names shard 'experts/unlisted.safetensors', which has no checksum"):
        Zoo.open(out)


@pytest.mark.parametrize("what", ["val_rmse", "weights"])
def test_non_finite_validation_or_weights_fail_the_build_naming_the_environment(dataset, tmp_path, monkeypatch, what):
    if what == "val_rmse":
        monkeypatch.setattr(zoo_build, "validate", lambda experts, *a, **k: (torch.full((experts.num_experts,),
                            float("nan"), dtype=torch.float64),) * 2)  # fmt: skip
    else:
        real = zoo_build.tr.finetune_experts

        def diverges(experts, *args, **kwargs):
            history = real(experts, *args, **kwargs)
            with torch.no_grad():
                next(experts.parameters()).fill_(float("nan"))
            return history

        monkeypatch.setattr(zoo_build.tr, "finetune_experts", diverges)
    out = tmp_path / "z"
    with pytest.raises(ValueError, match=rf"zoo: environment \d+: non-finite {what}"):
        zoo_build.build_zoo(_cfg(dataset, out, pretrain_epochs=0, finetune_epochs=0))
    assert not (out / "manifest.json").exists() and not list(out.rglob("env_*"))


def test_bad_config_values_name_the_argument(dataset, tmp_path):
    for kw, name in [({"experts_per_env": 0}, "experts_per_env"), ({"lr": -1.0}, "lr"),
                     ({"finetune_lr": 0.0}, "finetune_lr"), ({"noise_scale": -0.1}, "noise_scale"),
                     ({"val_rollout_steps": 50}, "val_rollout_steps"), ({"preset": "huge"}, "preset")]:  # fmt: skip
        with pytest.raises(ValueError, match=name):
            zoo_build.build_zoo(_cfg(dataset, tmp_path / "z", **kw))
    assert not (tmp_path / "z").exists()


def test_environments_are_sharded_across_ranks():
    from dynadiff_fast.dist import DistInfo, shard

    envs = list(range(7))
    parts = [shard(envs, DistInfo(rank=r, world_size=3)) for r in range(3)]
    assert sorted(sum(parts, [])) == envs and all(parts)


@pytest.mark.slow
def test_two_process_gloo_build_equals_single_process(built, dataset, tmp_path):
    """torchrun with 2 gloo ranks: each rank writes its environments' shards, rank 0 the manifest.
    Pretraining is data parallel, so the base differs from the 1-process one only by float rounding."""
    out = tmp_path / "z"
    script = (
        "import pytest; import test_zoo as t;"
        "mp = pytest.MonkeyPatch(); t.register(mp, t.Advect, t.ADVECT);"
        f"t.zoo_build.build_zoo(t._cfg({str(dataset)!r}, {str(out)!r}))"
    )
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2", "--master-port=29517",
           "--no-python", sys.executable, "-c", script]  # fmt: skip
    # the ranks import this module and the shared test systems as pytest does: their folders go on the path
    here = Path(__file__).resolve().parent
    path = [str(here), str(here.parent), os.environ.get("PYTHONPATH", "")]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(filter(None, path)))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = Zoo.open(out), Zoo.open(built)
    assert a.env_index.tolist() == b.env_index.tolist()
    assert a.manifest["shards"].keys() == b.manifest["shards"].keys()
    torch.testing.assert_close(a.base_state_dict(), b.base_state_dict(), rtol=1e-3, atol=1e-4)
