"""Zoo training loops: batched fine-tuning equals one-module-at-a-time fine-tuning, every expert sees
exactly its own environment's pairs, pretraining visits every pair once per epoch and learns, and the
one-layer noise is what the manifest says it is."""

import pytest
import torch

from dynadiff_fast.experts import train as tr
from dynadiff_fast.experts.batched_fno import BatchedFNO
from dynadiff_fast.experts.configs import expert_config

TINY = dict(in_channels=1, out_channels=1, hidden_channels=8, n_layers=2, n_modes=(4, 4), lifting_channel_ratio=1)


def _base(seed=0):
    cfg = expert_config("kolmogorov", "tiny", **TINY)
    torch.manual_seed(seed)
    return cfg, {k: v for k, v in cfg.build().state_dict().items() if isinstance(v, torch.Tensor)}


def _id_data(n_env, n_traj, n_frames, h=2, w=2):
    """Trajectories whose every frame is filled with its own id env*10000 + traj*100 + t."""
    e, j, t = torch.meshgrid(torch.arange(n_env), torch.arange(n_traj), torch.arange(n_frames), indexing="ij")
    ids = (e * 10000 + j * 100 + t).float()
    return ids[..., None, None, None].expand(n_env, n_traj, n_frames, 1, h, w).contiguous()


class Recorder(torch.nn.Module):
    """y = x * a; remembers every input's frame ids (one value per sample)."""

    def __init__(self, n_experts=None):
        super().__init__()
        shape = (1,) if n_experts is None else (n_experts, 1, 1, 1, 1)
        self.a = torch.nn.Parameter(torch.ones(shape))
        self.seen = []

    def forward(self, x):
        self.seen.append(x[..., 0, 0, 0].detach().clone())
        return x * self.a


def test_expert_seed_is_deterministic_and_distinct():
    seeds = {tr.expert_seed(0, env, k) for env in range(20) for k in range(20)}
    assert len(seeds) == 400 and tr.expert_seed(3, 1, 2) == tr.expert_seed(3, 1, 2) != tr.expert_seed(4, 1, 2)
    assert all(0 <= s < 2**63 for s in seeds)


def test_batched_finetune_equals_one_module_at_a_time():
    """The point of BatchedFNO training: E experts through one optimizer equal E separate runs."""
    cfg, base = _base()
    data = torch.randn(2, 3, 5, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    envs = [0, 1, 1]
    experts = BatchedFNO.from_state_dicts(cfg, [base] * 3)
    hist = tr.finetune_experts(experts, data, envs, [torch.Generator().manual_seed(s) for s in (5, 6, 7)], 2, 1e-2, 4)
    assert hist.shape == (2, 3)
    for e, (env, seed) in enumerate(zip(envs, (5, 6, 7))):
        module = cfg.build()
        module.load_state_dict(base)
        ref = tr.finetune_module(module, data, env, torch.Generator().manual_seed(seed), 2, 1e-2, 4)
        torch.testing.assert_close(hist[:, e], ref, rtol=1e-5, atol=1e-6)
        got = {k: v[e] for k, v in experts.stacked().items()}
        for k, v in module.state_dict().items():
            if isinstance(v, torch.Tensor):
                torch.testing.assert_close(got[k].detach(), v, rtol=1e-4, atol=1e-6)
        assert not torch.equal(got["fno_blocks.convs.0.weight.tensor"], base["fno_blocks.convs.0.weight.tensor"])


def test_each_expert_sees_exactly_its_environments_pairs_once_per_epoch():
    data = _id_data(3, 2, 4)
    rec = Recorder(n_experts=3)
    tr.finetune_experts(rec, data, [2, 0, 2], [torch.Generator().manual_seed(s) for s in range(3)], 2, 1e-3, 4)
    seen = torch.cat(rec.seen, dim=1)  # [E, 2 epochs * 6 pairs]
    for e, env in enumerate([2, 0, 2]):
        for epoch in range(2):
            ids = sorted(seen[e, epoch * 6 : (epoch + 1) * 6].tolist())
            assert ids == sorted(env * 10000 + j * 100 + t for j in range(2) for t in range(3))
    assert not torch.equal(seen[0], seen[2])  # same environment, own order


def test_pretrain_epoch_visits_every_pair_once_and_splits_batches_across_ranks(monkeypatch):
    data = _id_data(2, 3, 3)
    all_pairs = sorted(e * 10000 + j * 100 + t for e in range(2) for j in range(3) for t in range(2))
    rec = Recorder()
    tr.pretrain_epoch(rec, torch.optim.Adam(rec.parameters()), data, 5, torch.Generator().manual_seed(0))
    assert sorted(torch.cat(rec.seen).tolist()) == all_pairs
    # Two ranks, same seed: disjoint halves of every global minibatch (the all-reduce is stubbed out).
    monkeypatch.setattr(tr, "all_reduce_mean_", lambda t, info: t)
    halves = []
    for rank in range(2):
        rec = Recorder()
        info = tr.DistInfo(rank=rank, world_size=2)
        tr.pretrain_epoch(rec, torch.optim.Adam(rec.parameters()), data, 4, torch.Generator().manual_seed(0), info)
        halves.append(torch.cat(rec.seen).tolist())
    assert sorted(halves[0] + halves[1]) == all_pairs and not set(halves[0]) & set(halves[1])


def test_pretraining_learns_a_one_step_map():
    """A linear map x -> 0.7 x per environment: the epoch loss falls well below its start."""
    cfg, base = _base()
    model = cfg.build()
    x0 = torch.randn(2, 4, 1, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    data = torch.cat([x0 * 0.7**t for t in range(4)], dim=2)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(0)
    losses = [tr.pretrain_epoch(model, opt, data, 8, g) for _ in range(10)]
    assert losses[-1] < 0.4 * losses[0], losses


def test_perturb_one_layer_changes_one_tensor_of_one_expert_by_the_stated_amount():
    cfg, base = _base()
    stacked = {k: v[None].repeat(3, *[1] * v.dim()) for k, v in base.items()}
    before = {k: v.clone() for k, v in stacked.items()}
    layer, sigma = tr.perturb_one_layer(stacked, 1, torch.Generator().manual_seed(3), 0.1)
    changed = [(k, e) for k in stacked for e in range(3) if not torch.equal(stacked[k][e], before[k][e])]
    assert changed == [(layer, 1)]
    assert layer in tr.noise_layers(base) and "bias" not in layer
    w = before[layer][1]
    assert sigma == pytest.approx(0.1 * float(w.abs().square().mean().sqrt()))
    delta = stacked[layer][1] - w
    assert float(delta.abs().square().mean().sqrt()) == pytest.approx(sigma, rel=0.5)  # sample of the noise
    # reproducible from the expert's seed
    again = {k: v.clone() for k, v in before.items()}
    assert tr.perturb_one_layer(again, 1, torch.Generator().manual_seed(3), 0.1) == (layer, sigma)
    torch.testing.assert_close(again[layer], stacked[layer])
    # complex spectral weights get complex noise
    spectral = {"fno_blocks.convs.0.weight.tensor": before["fno_blocks.convs.0.weight.tensor"].clone()}
    tr.perturb_one_layer(spectral, 0, torch.Generator(), 0.1)
    d = spectral["fno_blocks.convs.0.weight.tensor"][0] - before["fno_blocks.convs.0.weight.tensor"][0]
    assert d.real.abs().sum() > 0 and d.imag.abs().sum() > 0


def test_noise_layers_are_weights_not_biases_or_gates():
    _, base = _base()
    names = tr.noise_layers(base)
    assert "fno_blocks.convs.1.weight.tensor" in names and "lifting.fcs.0.weight" in names
    assert not [n for n in names if "bias" in n or "channel_mlp_skips" in n]


def test_bad_arguments_name_themselves():
    cfg, base = _base()
    experts = BatchedFNO.from_state_dicts(cfg, [base] * 2)
    data = torch.randn(2, 2, 3, 1, 8, 8)
    g = [torch.Generator(), torch.Generator()]
    with pytest.raises(ValueError, match="generators"):
        tr.finetune_experts(experts, data, [0, 1], g[:1], 1, 1e-3, 2)
    with pytest.raises(ValueError, match="env_of_expert"):
        tr.finetune_experts(experts, data, [0, 2], g, 1, 1e-3, 2)
    with pytest.raises(ValueError, match="data"):
        tr.finetune_experts(experts, data[:, :, :1], [0, 1], g, 1, 1e-3, 2)
    with pytest.raises(ValueError, match="batch_size"):
        tr.finetune_experts(experts, data, [0, 1], g, 1, 1e-3, 0)
    with pytest.raises(ValueError, match="noise_scale"):
        tr.perturb_one_layer({k: v[None] for k, v in base.items()}, 0, torch.Generator(), -1.0)
