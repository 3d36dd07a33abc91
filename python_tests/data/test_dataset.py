"""Dataset writing/reading: layout, split, normalisation statistics, resume after interruption, errors.

A small exactly-solvable system (``Decay`` of python_tests/synthetic_systems.py: per-environment exponential
decay of a random field) stands in for the PDE solvers so these tests check the data layer alone."""

import dataclasses

import h5py
import numpy as np
import pytest
import torch
from synthetic_systems import Decay, register

from dynadiff_fast import systems
from dynadiff_fast.data import EnvDataset, environment_grid, presets, split_environments
from dynadiff_fast.data.presets import DatasetPreset
from dynadiff_fast.stages import simulate
from dynadiff_fast.systems.base import SolverInstability


@pytest.fixture
def decay_system(monkeypatch):
    preset = DatasetPreset(((0.1, 2.0, 9),), n_seen=4, n_train_traj=3, n_test_traj=2, n_frames=5)
    register(monkeypatch, Decay, preset)
    return preset


def test_environment_grid_is_a_tensor_product():
    g = environment_grid(((0.0, 1.0, 3), (10.0, 20.0, 2)))
    assert g.shape == (6, 2)
    assert g[:, 0].tolist() == [0.0, 0.0, 0.5, 0.5, 1.0, 1.0] and g[:, 1].tolist() == [10, 20] * 3


@pytest.mark.parametrize("grid,n_seen", [(((50.0, 250.0, 11),), 5), (((0.1, 0.3, 6), (0.0, 1.0, 5)), 6)])
def test_split_partitions_and_places_unseen_out_outside(grid, n_seen):
    p = environment_grid(grid)
    s = split_environments(p, n_seen, 0.1, seed=3)
    allidx = torch.cat([s["seen"], s["unseen_in"], s["unseen_out"]]).sort().values
    assert torch.equal(allidx, torch.arange(len(p))) and len(s["seen"]) == n_seen
    lo, hi = p[s["seen"]].min(0).values, p[s["seen"]].max(0).values
    assert ((p[s["unseen_in"]] >= lo) & (p[s["unseen_in"]] <= hi)).all()
    assert (((p[s["unseen_out"]] < lo) | (p[s["unseen_out"]] > hi)).any(dim=1)).all()
    assert len(s["unseen_out"]) > 0
    assert torch.equal(split_environments(p, n_seen, 0.1, seed=3)["seen"], s["seen"])  # seeded


def test_split_rejects_bad_counts():
    with pytest.raises(ValueError, match="n_seen"):
        split_environments(environment_grid(((0.0, 1.0, 4),)), 4, 0.1, 0)


def test_layout_values_and_stats(tmp_path, decay_system):
    out = simulate.make_dataset("decay", "tiny", str(tmp_path / "d.h5"), progress=False, envs_per_call=2)
    with h5py.File(out) as f:
        assert f["trajectories"].shape == (9, 5, 6, 2, 6, 5)
        assert f["params"].shape == (9, 1) and f.attrs["system"] == "decay" and bool(f.attrs["complete"])
        assert f["env_done"][...].all()
    with EnvDataset.open(out) as ds:
        assert ds.param_names == ("k",) and ds.channel_names == ("u", "w") and ds.frame_shape == (2, 6, 5)
        raw = ds.load(normalized=False)
        # Every trajectory follows its environment's exact decay law.
        k = ds.params[:, 0].float()
        ratio = raw[:, :, 1] / raw[:, :, 0]
        assert torch.allclose(ratio, torch.exp(-k * 0.1)[:, None, None, None, None].expand_as(ratio), rtol=1e-4)
        # Statistics come from the seen environments' training trajectories only.
        seen = ds.train(ds.split["seen"], normalized=False)
        x = seen.movedim(3, 0).reshape(2, -1).double()
        assert torch.allclose(ds.mean.double(), x.mean(1), rtol=1e-5)
        assert torch.allclose(ds.std.double(), x.std(1, unbiased=False), rtol=1e-4)
        z = ds.train(ds.split["seen"])
        assert torch.allclose(z.mean(dim=(0, 1, 2, 4, 5)), torch.zeros(2), atol=1e-5)
        assert torch.allclose(ds.denormalize(ds.normalize(raw)), raw, atol=1e-5)
        assert ds.train([0]).shape == (1, 3, 6, 2, 6, 5) and ds.test([0, 1]).shape == (2, 2, 6, 2, 6, 5)
        assert ds.load(2, [4, 0], slice(1, 3)).shape == (1, 2, 2, 2, 6, 5)
        with pytest.raises(IndexError, match="envs: index 9 out of range"):
            ds.load([9])
    assert out.with_suffix(".config.yaml").exists()


def test_interrupted_run_resumes_to_the_same_file(tmp_path, decay_system, monkeypatch):
    ref = simulate.make_dataset("decay", "tiny", str(tmp_path / "ref.h5"), progress=False, envs_per_call=2)
    calls = {"n": 0}
    real = simulate.ds_mod.write_environments

    def crash_on_third(path, envs, traj):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        real(path, envs, traj)

    target = tmp_path / "d.h5"
    monkeypatch.setattr(simulate.ds_mod, "write_environments", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        simulate.make_dataset("decay", "tiny", str(target), progress=False, envs_per_call=2)
    assert not target.exists() and target.with_name("d.h5.partial").exists()
    monkeypatch.setattr(simulate.ds_mod, "write_environments", real)
    written = []
    monkeypatch.setattr(simulate.ds_mod, "write_environments", lambda p, e, t: (written.append(e), real(p, e, t)))
    simulate.make_dataset("decay", "tiny", str(target), progress=False, envs_per_call=2)
    assert written == [[4, 5], [6, 7], [8]]  # batches 0 and 1 were kept
    with EnvDataset(ref) as a, EnvDataset(target) as b:
        assert torch.equal(a.load(normalized=False), b.load(normalized=False))


def test_existing_file_with_other_config_is_refused(tmp_path, decay_system):
    out = str(tmp_path / "d.h5")
    simulate.make_dataset("decay", "tiny", out, progress=False)
    simulate.make_dataset("decay", "tiny", out, progress=False)  # same config: reused
    with pytest.raises(ValueError, match="another config"):
        simulate.make_dataset("decay", "tiny", out, progress=False, seed=1)


def test_unstable_parameters_fail_before_any_work(tmp_path, decay_system, monkeypatch):
    monkeypatch.setitem(presets._TINY, "decay", dataclasses.replace(decay_system, env_grid=((1.0, 6.0, 4),)))
    with pytest.raises(SolverInstability, match="k_max"):
        simulate.make_dataset("decay", "tiny", str(tmp_path / "d.h5"), progress=False)
    assert list(tmp_path.iterdir()) == []


def test_unknown_system_and_preset():
    with pytest.raises(ValueError, match="preset: unknown 'huge'"):
        presets.get_preset("kolmogorov", "huge")
    with pytest.raises(ValueError, match="system: unknown name 'navier'"):
        presets.get_preset("navier", "tiny")
    with pytest.raises(ValueError, match="preset: 'bench' has no cylinder_flow entry"):
        presets.get_preset("cylinder_flow", "bench")


def test_incomplete_or_foreign_files_are_refused(tmp_path):
    p = tmp_path / "x.h5"
    with h5py.File(p, "w") as f:
        f.attrs["format"] = "something-else"
    with pytest.raises(ValueError, match="format"):
        EnvDataset(p)
    (tmp_path / "y.h5").write_bytes(b"not hdf5")
    with pytest.raises(ValueError, match="not a readable HDF5"):
        EnvDataset(tmp_path / "y.h5")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        EnvDataset(tmp_path / "z.h5")


def test_simulate_command_line(tmp_path, decay_system, capsys):
    from dynadiff_fast import cli

    out = tmp_path / "cli.h5"
    code = cli.main(["simulate", "--system", "decay", "--out", str(out), "--n-frames", "3", "-q"])
    assert code == 0 and out.exists()
    with EnvDataset(out) as ds:
        assert ds.n_frames == 4
    assert np.isfinite(ds.mean.numpy()).all()


def test_every_system_has_the_scaled_presets():
    pairs = set(presets.available())
    assert all((s, p) in pairs for s in systems.list_systems() for p in ("tiny", "small", "paper"))


@pytest.mark.parametrize(("system", "preset"), presets.available())
def test_every_preset_has_a_valid_grid_split_and_solver(system, preset):
    p = presets.get_preset(system, preset)
    s = systems.get_system(system, **p.system)
    params = environment_grid(p.env_grid)
    s.validate_params(params)
    split = split_environments(params, p.n_seen, p.out_fraction, seed=0)
    assert len(split["seen"]) == p.n_seen and len(split["unseen_out"]) > 0 and len(split["unseen_in"]) > 0


@pytest.mark.parametrize(
    ("field", "value"), [("n_train_traj", 0), ("n_test_traj", 0), ("n_frames", -1), ("n_frames", 2.5)]
)
def test_settings_leaving_no_data_are_refused_when_the_config_is_built(decay_system, field, value):
    # a float is refused as the preset field's type (config.replace_checked), a count < 1 by simulate.check
    with pytest.raises(ValueError, match=rf"{field}: expected an int(eger >= 1)?, got {value}"):
        simulate.SimulateConfig(system="decay", **{field: value})


def test_no_training_trajectories_is_a_one_line_cli_error_before_any_work(tmp_path, decay_system, capsys):
    from dynadiff_fast import cli

    out = tmp_path / "d.h5"
    assert cli.main(["simulate", "-q", "--system", "decay", "--out", str(out), "--n-train-traj", "0"]) == 2
    assert capsys.readouterr().err == "dynadiff simulate: error: n_train_traj: expected an integer >= 1, got 0\n"
    assert list(tmp_path.iterdir()) == []


def test_non_finite_statistics_are_an_error_not_a_complete_dataset(tmp_path, decay_system, monkeypatch):
    # k < 0: u0 exp(-k t) overflows float32 in every environment (a stand-in for a diverged solver)
    monkeypatch.setitem(presets._TINY, "decay", dataclasses.replace(decay_system, env_grid=((-3000.0, -2000.0, 9),)))
    out = tmp_path / "d.h5"
    with pytest.raises(ValueError, match=r"statistics are not finite .*seen environments \[\d"):
        simulate.make_dataset("decay", "tiny", str(out), progress=False)
    assert not out.exists()
