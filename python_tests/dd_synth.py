"""A tiny synthetic family of environments whose true dynamics ARE experts, for eval/baseline/pipeline tests.

Environment e evolves by x_{t+1} = f_{θ(α_e)}(x_t) with θ(α) = θ0 + Δ+ + α Δ- (a small neuraloperator
FNO), the parameter of environment e being α_e itself. So:
  * the zoo (one expert per seen environment) holds the exact generating models, fine-tuned "from" θ0;
  * CCM's endpoint construction recovers Δ+ and Δ- exactly, and α_e is the optimum of its search;
  * nearest-expert retrieval on a seen environment must pick that environment's expert (zero error).
Frames are 1 channel, 12 x 12 (big enough for the 11 x 11 SSIM window), already standardised.
``future_nan=True`` fills every test-trajectory frame after frame 0 with NaN, so any method that reads
the future produces NaN and fails.
"""

from __future__ import annotations

import torch

from dynadiff_fast.experts.configs import ExpertConfig

CFG = ExpertConfig(in_channels=1, out_channels=1, hidden_channels=4, n_modes=(4, 4), n_layers=2)
ALPHAS = (-1.0, -0.5, 0.0, 0.5, 1.0, 1.5)
SPLIT = {"seen": [0, 2, 4], "unseen_in": [1, 3], "unseen_out": [5]}
HW = 12


def family(seed: int = 0) -> tuple[dict, dict, dict]:
    """θ0, Δ+, Δ- as state dicts of ``CFG``."""
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        theta0 = CFG.build().state_dict()
    plus, minus = {}, {}
    for k, v in theta0.items():
        if not torch.is_tensor(v) or not v.is_floating_point() and not v.is_complex():
            continue
        scale = float(v.abs().pow(2).mean().sqrt()) + 1e-3
        real = torch.view_as_real(v).shape if v.is_complex() else v.shape
        d1 = 0.3 * scale * torch.randn(real, generator=g)
        d2 = 0.3 * scale * torch.randn(real, generator=g)
        plus[k] = torch.view_as_complex(d1) if v.is_complex() else d1
        minus[k] = torch.view_as_complex(d2) if v.is_complex() else d2
    theta0 = {k: v for k, v in theta0.items() if k in plus}
    return theta0, plus, minus


def expert_weights(alpha: float, theta0: dict, plus: dict, minus: dict) -> dict:
    return {k: theta0[k] + plus[k] + alpha * minus[k] for k in theta0}


class SynthDataset:
    """In-memory stand-in with ``EnvDataset``'s reading interface (fields already standardised)."""

    system_name = "synthetic"
    param_names = ("alpha",)
    channel_names = ("u",)
    dt_frame = 1.0

    def __init__(self, n_train: int = 3, n_test: int = 2, n_frames: int = 9, seed: int = 0, future_nan: bool = False):
        from dynadiff_fast.experts.batched_fno import BatchedFNO

        self.theta0, self.plus, self.minus = family(seed)
        self.params = torch.tensor(ALPHAS, dtype=torch.float64)[:, None]
        self.split = {k: torch.tensor(v) for k, v in SPLIT.items()}
        self.n_env, self.n_traj, self.n_frames = len(ALPHAS), n_train + n_test, n_frames
        self.n_train_traj = n_train
        self.frame_shape = (1, HW, HW)
        self.mean, self.std = torch.zeros(1), torch.ones(1)
        g = torch.Generator().manual_seed(seed + 1)
        x0 = torch.randn(self.n_env, self.n_traj, 1, HW, HW, generator=g)
        x0 = torch.nn.functional.avg_pool2d(x0.flatten(0, 1), 3, 1, 1, count_include_pad=False).reshape(x0.shape)
        gen = BatchedFNO.from_state_dicts(CFG, [self.weights(a) for a in ALPHAS])
        with torch.no_grad():
            self.data = gen.rollout(x0, n_frames - 1).float()  # [env, traj, frames, 1, H, W]
        if future_nan:
            self.data[:, n_train:, 1:] = float("nan")

    def weights(self, alpha: float) -> dict:
        return expert_weights(alpha, self.theta0, self.plus, self.minus)

    def load(self, envs=None, trajs=None, frames=None, normalized: bool = True) -> torch.Tensor:
        def sel(s, n):
            if s is None:
                return list(range(n))
            if isinstance(s, slice):
                return list(range(n))[s]
            return [s] if isinstance(s, int) else list(s)

        e, t, f = sel(envs, self.n_env), sel(trajs, self.n_traj), sel(frames, self.n_frames)
        return self.data[e][:, t][:, :, f].clone()

    def train(self, envs=None, normalized: bool = True) -> torch.Tensor:
        return self.load(envs, slice(0, self.n_train_traj))

    def test(self, envs=None, normalized: bool = True) -> torch.Tensor:
        return self.load(envs, slice(self.n_train_traj, self.n_traj))


class SynthZoo:
    """Stand-in with ``Zoo``'s interface: one expert per seen environment, the exact generating model;
    the base model is θ0 + Δ+ (the family's centre)."""

    system_name = "synthetic"
    config = CFG

    def __init__(self, ds: SynthDataset):
        self.ds = ds
        self.env_index = ds.split["seen"].clone()
        self.params = ds.params[self.env_index]
        self.val_rmse = torch.zeros(len(self.env_index), dtype=torch.float64)
        self.dataset_info = {"param_names": list(ds.param_names), "channel_names": list(ds.channel_names)}
        self.manifest = {"build": {"finetune_epochs": 1, "lr": 1e-3, "batch_size": 8, "noise_scale": 0.02}}

    def __len__(self) -> int:
        return len(self.env_index)

    def state_dicts(self, indices=None) -> list[dict]:
        idx = range(len(self)) if indices is None else indices
        return [self.ds.weights(float(self.params[i, 0])) for i in idx]

    def batched(self, indices=None):
        from dynadiff_fast.experts.batched_fno import BatchedFNO

        return BatchedFNO.from_state_dicts(CFG, self.state_dicts(indices)).eval()

    def base_state_dict(self) -> dict:
        return {k: self.ds.theta0[k] + self.ds.plus[k] for k in self.ds.theta0}

    def base_module(self):
        m = CFG.build()
        m.load_state_dict(self.base_state_dict(), strict=False)
        return m.eval()
