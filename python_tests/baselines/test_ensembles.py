"""The ensemble baselines (K predictors per environment) on the synthetic family (dd_synth)."""

import pytest
import torch
from dd_synth import SynthZoo

from dynadiff_fast.baselines import ensembles, prefix_ensemble
from dynadiff_fast.baselines.common import Budget, Context, batched
from dynadiff_fast.eval.protocol import ProtocolConfig, make_task
from dynadiff_fast.experts.evaluate import paired_prefix_errors
from dynadiff_fast.state_dict import repeat_state_dict


@pytest.fixture(scope="module")
def setup(synth_leaky):
    ds = synth_leaky
    ctx = Context(ds=ds, zoo=SynthZoo(ds), budget=Budget(), seed=0, n_samples=3)
    return ds, ctx, make_task(ds, "in_domain", ProtocolConfig(obs_len=5))


def test_nearest_env_members_are_the_retrieved_environments_experts():
    env_index = torch.tensor([4, 4, 4, 7, 7, 9, 9, 9])
    got = ensembles.nearest_env_members(env_index, torch.tensor([6, 1, 3]))
    assert got.tolist() == [[5, 6], [0, 1], [3, 4]]  # K = 2: environment 7 has only two experts


def test_soup_members_lead_with_the_generating_expert(setup):
    _, ctx, task = setup
    adapted = ensembles.run(ctx, task)
    soup = adapted["soup_members"]
    assert soup.k == 3 and [row[0] for row in soup.info["zoo_index"]] == list(range(task.n_env))
    assert adapted["nn_ensemble"].k == 1 and adapted["nn_ensemble"].info["zoo_env"] == task.envs.tolist()


def test_prefix_finetune_ensemble_fits_the_prefix_and_keeps_a_spread(setup, monkeypatch):
    monkeypatch.setattr(prefix_ensemble, "STEPS", 30)
    _, ctx, task = setup
    a = prefix_ensemble.run(ctx, task)["prefix_finetune_ensemble"]
    assert a.k == 3 and a.info["steps"] == 30
    pred = a.rollout(slice(0, task.n_env), task.x0, 4)  # [N, K, B, 5, ...]
    assert pred.shape[:2] == (task.n_env, 3) and (pred[:, :, :, 1:].std(dim=1) > 0).all()
    # every member fits its environment's observed frames better than the base model it starts from
    length = task.obs.shape[1]
    roll = a.rollout(slice(0, task.n_env), task.obs[:, :1], length - 1)[:, :, 0]  # [N, K, L, ...]
    members = (roll[:, :, 1:] - task.obs[:, None, 1:]).square().flatten(2).mean(-1)  # [N, K]
    base = batched(ctx.zoo.config, repeat_state_dict(ctx.zoo.base_state_dict(), task.n_env))
    with torch.no_grad():
        before = paired_prefix_errors(base, task.obs)
    wrong = before > 1e-6  # the base model is the exact dynamics of alpha = 0: nothing to fit there
    assert wrong.sum() == 2 and (members.max(dim=1).values[wrong] < 0.8 * before[wrong]).all()
    with pytest.raises(ValueError, match="n_samples"):
        prefix_ensemble.run(Context(ds=ctx.ds, zoo=ctx.zoo, n_samples=1), task)
