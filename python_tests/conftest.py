"""Test setup. TRITON_INTERPRET must be set before any Triton kernel module is imported, so it is
set here, at collection start, whenever no CUDA device is present."""

import os

import pytest
import torch

HAS_CUDA = torch.cuda.is_available()
if not HAS_CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")

# One thread: the CI machine has 2 vCPUs and the second is not a free core.
torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device; torch.cuda.is_available() is False here")
    for item in items:
        if "gpu" in item.keywords and not HAS_CUDA:
            item.add_marker(skip_gpu)


@pytest.fixture
def rng():
    """A seeded torch.Generator so every test's random data is reproducible."""
    return torch.Generator().manual_seed(1234)


# -------------------------------------------------------------------------------------------------
# Shared data: the synthetic expert family (dd_synth) and the trained pipeline on the Relax stand-in
# -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def synth_leaky():
    """The dd_synth family with every test-trajectory frame after frame 0 NaN: any method (or task) that
    reads a test trajectory's future gets NaN."""
    from dd_synth import SynthDataset

    return SynthDataset(future_nan=True)


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """The whole trained pipeline on disk on the ``Relax`` stand-in (python_tests/synthetic_systems.py):
    dataset -> zoo -> `train all` (VAE, DiT), plus a ``RelaxOther`` dataset. Deliberately undertrained:
    it is there for mechanics, API and errors (generative/test_dynadiff.py, eval/test_diagnostics.py)."""
    from synthetic_systems import Relax, RelaxOther, register

    from dynadiff_fast.data.presets import DatasetPreset
    from dynadiff_fast.stages import simulate
    from dynadiff_fast.stages.train_all import TrainAllConfig, train_all
    from dynadiff_fast.stages.zoo import ZooBuildConfig, build_zoo

    root = tmp_path_factory.mktemp("pipeline")
    preset = DatasetPreset(((0.2, 2.0, 10),), n_seen=6, n_train_traj=4, n_test_traj=2, n_frames=8)
    with pytest.MonkeyPatch.context() as mp:
        for cls in (Relax, RelaxOther):
            register(mp, cls, preset)
        data = simulate.make_dataset("relax", "tiny", str(root / "relax.h5"), progress=False)
        other = simulate.make_dataset("relax_other", "tiny", str(root / "other.h5"), progress=False)
        zoo = build_zoo(ZooBuildConfig(data=str(data), out=str(root / "zoo"), experts_per_env=2, pretrain_epochs=2,
                                       finetune_epochs=2, progress=False,
                                       expert={"hidden_channels": 4, "n_layers": 2, "n_modes": [4, 4]}))  # fmt: skip
        vae = {"steps": 6, "batch_size": 4, "model": {"d_model": 16, "latent_dim": 4, "n_layers": 1},
               "quality": False, "checkpoint_every": 6, "func_frames": 4, "func_batch": 2}  # fmt: skip
        dit = {"steps": 12, "batch_size": 8, "checkpoint_every": 6, "log_every": 6, "obs_len": 5,
               "dit": {"hidden_size": 16, "depth": 1, "num_heads": 2}, "prompter": {"gru_hidden": 8}}  # fmt: skip
        run = train_all(TrainAllConfig(zoo=str(zoo), data=str(data), out=str(root / "run"), progress=False,
                                       vae=vae, dit=dit))  # fmt: skip
        yield dict(root=root, data=data, other=other, zoo=zoo, run=run, dit=dit)


@pytest.fixture(scope="module")
def dd(pipeline):
    """``DynaDiff.load`` of the ``pipeline`` run."""
    from dynadiff_fast.generative.dynadiff import DynaDiff

    return DynaDiff.load(pipeline["run"])
