"""Each baseline on the synthetic family whose environments are driven by known experts (dd_synth)."""

import pytest
import torch
from dd_synth import ALPHAS, CFG, SynthDataset, SynthZoo

from dynadiff_fast.baselines import METHODS, method_module, result_keys
from dynadiff_fast.baselines.ccm import endpoint_basis, principal_basis, search_alpha
from dynadiff_fast.baselines.common import Budget, Context, batched, combine
from dynadiff_fast.baselines.nn_prefix import select_nearest
from dynadiff_fast.baselines.soup import prefix_weights
from dynadiff_fast.eval.protocol import ProtocolConfig, make_task, score, truth
from dynadiff_fast.state_dict import stack_state_dicts

TINY = Budget(conditioned_epochs=1, context_epochs=1, context_steps=3, batch_size=8, search_points=5)


@pytest.fixture(scope="module")
def setup(synth_leaky):
    ds = synth_leaky  # any read of a test trajectory's future poisons the result
    ctx = Context(ds=ds, zoo=SynthZoo(ds), budget=TINY, seed=0)
    tasks = {d: make_task(ds, d, ProtocolConfig(obs_len=5)) for d in ("in_domain", "out_domain")}
    return ds, ctx, tasks


def test_nn_prefix_picks_the_generating_expert(setup):
    ds, ctx, tasks = setup
    task = tasks["in_domain"]
    best, errors = select_nearest(ctx.zoo.batched(), task.obs)
    # zoo expert i is the exact model of seen environment i
    assert best.tolist() == list(range(task.n_env))
    assert errors.min(1).values.max() < 1e-10


def test_soup_math():
    a = {"w": torch.tensor([[1.0, 2.0], [3.0, 6.0]]), "c": torch.tensor([[1 + 1j], [3 - 1j]])}
    out = combine(a, torch.tensor([[0.5, 0.5], [0.25, 0.75]]))
    torch.testing.assert_close(out["w"], torch.tensor([[2.0, 4.0], [2.5, 5.0]]))
    torch.testing.assert_close(out["c"], torch.tensor([[2 + 0j], [2.5 - 0.5j]]))
    w = prefix_weights(torch.tensor([[1.0, 2.0], [1.0, 1.0]]))
    torch.testing.assert_close(w, torch.tensor([[0.8, 0.2], [0.5, 0.5]]))


def test_ccm_endpoint_basis_recovers_the_family(setup):
    ds, ctx, _ = setup
    anchor = {k: v[None] for k, v in ds.theta0.items()}
    low = stack_state_dicts([ds.weights(-1.0)])
    high = stack_state_dicts([ds.weights(1.0)])
    basis, coords = endpoint_basis(anchor, low, high)
    for k in ds.theta0:
        torch.testing.assert_close(basis[k][0], ds.theta0[k] + ds.plus[k], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(basis[k][1], ds.minus[k], rtol=1e-5, atol=1e-6)
    assert coords.flatten().tolist() == [-1.0, 1.0]


def test_ccm_search_finds_the_true_alpha(setup):
    ds, ctx, tasks = setup
    anchor = {k: v[None] for k, v in ds.theta0.items()}
    basis, coords = endpoint_basis(anchor, stack_state_dicts([ds.weights(-1.0)]), stack_state_dicts([ds.weights(1.0)]))
    task = tasks["out_domain"]  # alphas -0.5, 0.5 (inside) and 1.5 (outside the endpoints)
    # search box: [-2, 2]; 9 points -> coarse cell 0.5, which contains every true alpha exactly
    alpha, err = search_alpha(CFG, basis, coords, task.obs, points=9)
    torch.testing.assert_close(alpha[:, 0], torch.tensor([ALPHAS[e] for e in task.envs.tolist()]))
    assert err.max() < 1e-10


def test_ccm_principal_variant_spans_the_zoo(setup):
    ds, _, _ = setup
    anchor = {k: v[None] for k, v in ds.theta0.items()}
    zoo = stack_state_dicts([ds.weights(a) for a in (-1.0, 0.0, 1.0, 0.5)])
    basis, coords = principal_basis(anchor, zoo, n_dirs=1)
    # each zoo expert is reproduced by its own coordinate (the family is exactly 1-D)
    rebuilt = combine(basis, torch.cat([torch.ones(4, 1), coords], dim=1))
    for k in zoo:
        torch.testing.assert_close(rebuilt[k], zoo[k], rtol=1e-4, atol=1e-5)
    assert coords.std(unbiased=False).item() == pytest.approx(1.0, rel=1e-4)


def test_batched_experts_reproduce_the_data(setup):
    ds, _, tasks = setup
    task = tasks["in_domain"]
    experts = batched(CFG, stack_state_dicts([ds.weights(ALPHAS[e]) for e in task.envs.tolist()]))
    pred = experts.rollout(task.x0, task.steps)[:, None]
    ds_clean = SynthDataset()
    s = score(pred, truth(ds_clean, task))
    assert s.rmse.max() < 1e-5


@pytest.mark.parametrize("method", [m for m in METHODS if m != "dynadiff"])
def test_every_baseline_runs_without_reading_the_future(setup, method, monkeypatch):
    import dynadiff_fast.baselines.prefix_finetune as pf

    # 10/100/1000 steps are the real schedule; checkpoints 2/5/10 keep this test short
    monkeypatch.setattr(pf, "STEPS", (2, 5, 10))
    monkeypatch.setattr(pf, "NAMES", tuple(f"prefix_finetune_{k}" for k in (2, 5, 10)))
    ds, ctx, tasks = setup
    clean = SynthDataset()
    for task in tasks.values():
        adapted = method_module(method).run(ctx, task)
        assert list(adapted) == list(method_module(method).NAMES)
        for key, a in adapted.items():
            pred = a.rollout(slice(0, task.n_env), task.x0, task.steps)
            assert pred.shape == (task.n_env, a.k, len(task.test_trajs), task.steps + 1, *ds.frame_shape), key
            assert torch.isfinite(pred).all(), key
            s = score(pred, truth(clean, task))
            assert torch.isfinite(s.rmse).all() and a.seconds >= 0


def test_exact_baselines_beat_base(setup):
    """On this family the zoo spans the truth: retrieval and CCM must beat the unadapted base model."""
    ds, ctx, tasks = setup
    clean = SynthDataset()
    task = tasks["out_domain"]
    true = truth(clean, task)

    def err(method, key):
        a = method_module(method).run(ctx, task)[key]
        return score(a.rollout(slice(0, task.n_env), task.x0, task.steps), true).rmse.mean().item()

    base = err("base", "base")
    assert err("ccm", "ccm") < 0.1 * base
    assert err("nn_prefix", "nn_prefix") < base


def test_result_keys_cover_every_method():
    keys = result_keys()
    for k in ("dynadiff_prefix", "dynadiff_none", "dynadiff_shuffled", "dynadiff_zero_prompt", "one_per_env", "base"):
        assert k in keys
    assert "prefix_finetune_1000" in keys and "param_conditioned_inferred" in keys
    assert len(keys) == len(set(keys))
    with pytest.raises(ValueError, match="unknown"):
        method_module("magic")


def test_ccm_principal_variant_on_a_two_parameter_family(rng):
    anchor = {"w": torch.randn(1, 5, 3, generator=rng), "c": torch.randn(1, 4, dtype=torch.cfloat, generator=rng)}
    plus = {k: torch.randn(v.shape[1:], dtype=v.dtype, generator=rng) for k, v in anchor.items()}
    d1 = {k: torch.randn(v.shape[1:], dtype=v.dtype, generator=rng) for k, v in anchor.items()}
    d2 = {k: torch.randn(v.shape[1:], dtype=v.dtype, generator=rng) for k, v in anchor.items()}
    ab = torch.tensor([[a, b] for a in (-1.0, 0.0, 1.0) for b in (-1.0, 1.0)])
    zoo = {k: torch.stack([anchor[k][0] + plus[k] + a * d1[k] + b * d2[k] for a, b in ab.tolist()]) for k in anchor}
    # the anchor's keys in another order than the zoo's (a base read back from safetensors is sorted by key):
    # the two must still be subtracted key by key
    shuffled = {k: anchor[k] for k in sorted(anchor)}
    assert list(shuffled) != list(zoo)
    for anchor_in in (anchor, shuffled):
        basis, coords = principal_basis(anchor_in, zoo, n_dirs=2)
        assert coords.shape == (6, 2)
        rebuilt = combine(basis, torch.cat([torch.ones(6, 1), coords], dim=1))
        for k in zoo:
            torch.testing.assert_close(rebuilt[k], zoo[k], rtol=1e-4, atol=1e-4)
    # the coordinates are an affine image of the true (a, b): a rank-2 linear fit recovers them exactly
    design = torch.cat([coords, torch.ones(6, 1)], 1).double()
    sol = torch.linalg.lstsq(design, ab.double()).solution
    assert (design @ sol - ab.double()).abs().max() < 1e-5
