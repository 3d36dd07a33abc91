"""Every stage that reads another's output refuses a mismatch before any compute, naming both sides: a zoo or a
DynaDiff run evaluated on another dataset (another system, or the same system simulated with another seed), a
run evaluated with a zoo of another expert architecture, a run folder that is not a run. Real (micro) files of
the quickest system, Lotka-Volterra."""

import pytest

from dynadiff_fast.cli import main
from dynadiff_fast.data import EnvDataset
from dynadiff_fast.data.dataset import identity_mismatches
from dynadiff_fast.experts.zoo import Zoo
from dynadiff_fast.generative.dynadiff import check_run
from dynadiff_fast.stages.simulate import SimulateConfig, simulate_dataset
from dynadiff_fast.stages.train_dit import TrainDiTConfig, train_dit
from dynadiff_fast.stages.train_vae import TrainVAEConfig, train_vae
from dynadiff_fast.stages.zoo import ZooBuildConfig, build_zoo

COMMON = {"preset": "tiny", "device": "cpu", "progress": False}


def _simulate(path, system="lotka_volterra", seed=0, **solver):
    simulate_dataset(
        SimulateConfig(system=system, preset="tiny", out=str(path), n_frames=6, n_train_traj=2, n_test_traj=1,
                       seed=seed, solver=solver),
        progress=False,
    )  # fmt: skip
    return path


def _zoo(data, out, hidden=8):
    build_zoo(ZooBuildConfig(data=str(data), out=str(out), experts_per_env=1, pretrain_epochs=1, finetune_epochs=1,
                             val_rollout_steps=2, expert={"hidden": hidden}, **COMMON))  # fmt: skip
    return out


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("identity")
    data = _simulate(root / "data.h5")
    zoo = _zoo(data, root / "zoo")
    run = root / "run"
    train_vae(TrainVAEConfig(zoo=str(zoo), data=str(data), out=str(run / "vae"), steps=4, **COMMON))
    train_dit(TrainDiTConfig(zoo=str(zoo), vae=str(run / "vae"), data=str(data), out=str(run / "dit"), steps=4,
                             obs_len=3, **COMMON))  # fmt: skip
    return {
        "data": data,
        "zoo": zoo,
        "run": run,
        "reseeded": _simulate(root / "reseeded.h5", seed=1),
        "other_system": _simulate(root / "ns.h5", system="navier_stokes", resolution=8),
        "wide_zoo": _zoo(data, root / "wide_zoo", hidden=12),
    }


def test_identity_of_a_dataset_matches_itself_and_names_what_differs(files):
    with EnvDataset.open(files["data"]) as ds, EnvDataset.open(files["reseeded"]) as other:
        assert identity_mismatches(ds.identity(), ds) == []
        bad = identity_mismatches(ds.identity(), other)
        keys = {line.split(":")[0] for line in bad}
        assert {"mean", "std", "seed"} <= keys and "system_name" not in keys
        assert all("recorded" in line and "this dataset" in line for line in bad)
        # only what the record holds is compared (a run records no split)
        assert identity_mismatches({"system_name": "lotka_volterra"}, other) == []


@pytest.mark.parametrize("which, names", [("other_system", "system_name"), ("reseeded", "mean")])
def test_zoo_and_run_refuse_another_dataset(files, which, names):
    zoo = Zoo.open(files["zoo"])
    with EnvDataset.open(files[which]) as other:
        with pytest.raises(ValueError, match=f"data: .* is not the dataset the zoo .*{names}: recorded"):
            zoo.check_dataset(other)
        with pytest.raises(ValueError, match=f"run: .* was trained on another dataset .*{names}: recorded"):
            check_run(files["run"], other)
    with EnvDataset.open(files["data"]) as ds:
        zoo.check_dataset(ds)
        assert check_run(files["run"], ds, zoo) == files["run"] / "dit"


def test_run_refuses_a_zoo_of_another_architecture(files):
    with EnvDataset.open(files["data"]) as ds:
        with pytest.raises(ValueError, match="run: .* generates .* experts, the zoo .* holds"):
            check_run(files["run"], ds, Zoo.open(files["wide_zoo"]))


def _evaluate(files, tmp_path, data, run=None):
    out = tmp_path / "eval"
    args = ["evaluate", "-q", "--data", str(data), "--zoo", str(files["zoo"]), "--out", str(out)]
    args += ["--methods", "base"] + (["--run", str(run)] if run else [])
    return main(args), out


def test_evaluate_refuses_before_writing_anything(files, tmp_path, capsys):
    """The issue's case: a zoo of one system on another system's data wrote results.json, then crashed."""
    code, out = _evaluate(files, tmp_path, files["other_system"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and not out.exists()
    assert err.startswith("dynadiff evaluate: error: data: ") and "system_name: recorded 'lotka_volterra'" in err
    # --run naming a zoo folder (not a run): one line before any work
    code, out = _evaluate(files, tmp_path, files["data"], run=files["zoo"])
    err = capsys.readouterr().err
    assert code == 2 and "holds no dynadiff.json" in err and not out.exists()


def test_training_refuses_another_dataset(files, tmp_path):
    with pytest.raises(ValueError, match="is not the dataset the zoo"):
        train_vae(TrainVAEConfig(zoo=str(files["zoo"]), data=str(files["reseeded"]), out=str(tmp_path / "v"), steps=1,
                                 **COMMON))  # fmt: skip
    assert not (tmp_path / "v").exists()
