"""Ensembles of stacked experts: the batched rollout equals one expert at a time (FNO and MLP experts), and
``pick_ensemble`` keeps the group of candidates the prefix CRPS ranks best."""

import pytest
import torch

from dynadiff_fast.experts.batched_fno import BatchedFNO
from dynadiff_fast.experts.batched_mlp import BatchedMLP
from dynadiff_fast.experts.configs import ExpertConfig, MLPExpertConfig
from dynadiff_fast.experts.ensemble import pick_ensemble, prefix_crps, rollout_ensemble, rollout_ensemble_reference
from dynadiff_fast.experts.evaluate import prefix_error
from dynadiff_fast.metrics import crps_ensemble

FNO = ExpertConfig(in_channels=2, out_channels=2, hidden_channels=4, n_modes=(4, 4), n_layers=2)
MLP = MLPExpertConfig(state_dim=2, hidden=8, n_layers=2)


def _experts(cfg, n, seed=0):
    torch.manual_seed(seed)
    modules = [cfg.build().eval() for _ in range(n)]
    return (BatchedFNO if isinstance(cfg, ExpertConfig) else BatchedMLP).from_modules(modules)


@pytest.mark.parametrize("cfg,frame", [(FNO, (2, 10, 10)), (MLP, (2,))])
def test_batched_rollout_equals_one_expert_at_a_time(rng, cfg, frame):
    experts = _experts(cfg, 6)  # N = 2 environments x K = 3 members
    x0 = torch.randn(2, 4, *frame, generator=rng)
    got = rollout_ensemble(experts, x0, 5)
    assert got.shape == (2, 3, 4, 6, *frame) and not got.requires_grad
    torch.testing.assert_close(got, rollout_ensemble_reference(experts, x0, 5), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got[1, 2, :, 0], x0[1])
    with pytest.raises(ValueError, match="do not divide"):
        rollout_ensemble(experts, x0[:1].expand(4, *x0.shape[1:]), 2)


def _perturbed(base: BatchedFNO, k: int, scale: float, g: torch.Generator) -> BatchedFNO:
    """k copies of ``base`` (one expert) with relative Gaussian noise on every weight."""
    out = {}
    for key, v in base.stacked().items():
        v = v.detach().expand(k, *v.shape[1:])
        noise = torch.randn(v.shape, generator=g, dtype=v.dtype)
        out[key] = v + scale * float(v.abs().square().mean().sqrt()) * noise
    return BatchedFNO.from_stacked(FNO, out)


def test_pick_ensemble_keeps_the_group_that_fits_the_observations(rng):
    truth = _experts(FNO, 2, seed=1)  # environment n evolves by expert n
    obs = truth.rollout(torch.randn(2, 1, 2, 10, 10, generator=rng), 5)[:, 0].detach()  # [N, L, C, H, W]
    k = 3
    near = [_perturbed(truth.select([n]), k, 0.01, rng) for n in range(2)]
    far = [_perturbed(truth.select([1 - n]), k, 0.01, rng) for n in range(2)]  # the other environment's dynamics
    # environment 0: groups (near, far); environment 1: (far, near)
    cands = BatchedFNO.cat([near[0], far[0], far[1], near[1]])
    keep, scores = pick_ensemble(cands, obs, groups=2)
    assert keep.tolist() == [0, 1, 2, 9, 10, 11]
    with torch.no_grad():
        roll = cands.rollout(obs[:, 0].repeat_interleave(2 * k, dim=0)[:, None], 5)[:, 0]
    roll = roll.view(2, 2, k, *obs.shape[1:])
    by_hand = torch.tensor(
        [[crps_ensemble(roll[n, g, :, 1:], obs[n, 1:]).double().mean() for g in range(2)] for n in range(2)]
    )
    torch.testing.assert_close(prefix_crps(roll, obs), by_hand)
    torch.testing.assert_close(scores, prefix_error(roll.flatten(0, 1), obs.repeat_interleave(2, 0)).flatten()[keep])


def test_pick_ensemble_bad_inputs_and_one_frame(rng):
    cands = _experts(FNO, 4)
    obs = torch.randn(2, 3, 2, 10, 10, generator=rng)
    with pytest.raises(ValueError, match="groups"):
        pick_ensemble(cands, obs, groups=3)
    with pytest.raises(ValueError, match="K >= 2"):
        pick_ensemble(cands, obs, groups=2)
    with pytest.warns(UserWarning, match="L = 1"):
        keep, scores = pick_ensemble(cands, obs[:, :1], groups=1)
    assert keep.tolist() == [0, 1, 2, 3] and torch.isnan(scores).all()
