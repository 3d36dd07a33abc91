"""evaluate_experts equals a manual per-module rollout loop, chunking does not change it, errors are clear."""

import pytest
import torch

from dynadiff_fast.experts import evaluate_experts
from dynadiff_fast.experts.batched_fno import BatchedFNO
from dynadiff_fast.experts.configs import ExpertConfig

CFG = ExpertConfig(2, 2, 8, (6, 6), 2)


def _manual(modules, data, steps):
    """rmse[e, b, t-1] by rolling every neuraloperator module out on its own."""
    out = torch.zeros(len(modules), data.shape[1], steps)
    with torch.no_grad():
        for e, m in enumerate(modules):
            traj = data[e if data.shape[0] > 1 else 0]
            x = traj[:, 0]
            for t in range(1, steps + 1):
                x = m(x)
                out[e, :, t - 1] = ((x - traj[:, t]) ** 2).mean(dim=(1, 2, 3)).sqrt()
    return out


@pytest.fixture
def experts():
    torch.manual_seed(0)
    modules = [CFG.build() for _ in range(3)]
    return modules, BatchedFNO.from_modules(modules)


@pytest.mark.parametrize("shared", [False, True])
def test_matches_manual_loop(experts, shared, rng):
    modules, bf = experts
    data = torch.randn(1 if shared else 3, 2, 5, 2, 16, 12, generator=rng)
    ref = _manual(modules, data, 3)
    for chunk in (None, 1, 2):
        got = evaluate_experts(bf, data, rollout_steps=3, chunk_size=chunk, reduce="none", progress=False)
        assert got.shape == (3, 2, 3)
        torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-6)
    mean = evaluate_experts(bf, data, rollout_steps=3, progress=False)
    torch.testing.assert_close(mean, ref.mean(dim=1), rtol=1e-4, atol=1e-6)


def test_dataset_source(experts, rng):
    modules, bf = experts
    frames = torch.randn(4, 2, 4, 2, 16, 16, generator=rng)  # [env, test traj, frames, C, H, W]

    class FakeDataset:  # the EnvDataset surface evaluate_experts reads
        n_traj, n_train_traj, n_frames, frame_shape = 5, 3, 4, (2, 16, 16)

        def test(self, envs, normalized=True):
            return frames[envs]

    for envs in ([3, 0, 2], [1]):
        got = evaluate_experts(bf, (FakeDataset(), envs), 2, chunk_size=2, reduce="none", progress=False)
        torch.testing.assert_close(got, _manual(modules, frames[envs], 2), rtol=1e-4, atol=1e-6)


def test_bad_input(experts):
    _, bf = experts
    data = torch.randn(3, 2, 3, 2, 16, 16)
    with pytest.raises(ValueError, match="rollout_steps"):
        evaluate_experts(bf, data, rollout_steps=3, progress=False)
    with pytest.raises(ValueError, match="leading axis"):
        evaluate_experts(bf, data[:2], rollout_steps=1, progress=False)
    with pytest.raises(ValueError, match="channels"):
        evaluate_experts(bf, torch.randn(3, 2, 3, 3, 16, 16), rollout_steps=1, progress=False)
    with pytest.raises(ValueError, match="shape"):
        evaluate_experts(bf, data[0], rollout_steps=1, progress=False)
    with pytest.raises(ValueError, match="reduce"):
        evaluate_experts(bf, data, rollout_steps=1, reduce="sum", progress=False)
    with pytest.raises(TypeError, match="BatchedFNO"):
        evaluate_experts([bf], data, rollout_steps=1, progress=False)
