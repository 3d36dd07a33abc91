"""Latent DiT: adaLN-Zero init (zero output), conditioning paths, shapes, errors."""

import pytest
import torch

from dynadiff_fast.generative.dit import DIT_PRESETS, DiTConfig, LatentDiT, timestep_embedding


def make(L=7, d=5, P=6, **kw):
    torch.manual_seed(0)
    return LatentDiT(DiTConfig(hidden_size=32, depth=2, num_heads=4, **kw), (L, d), P)


def test_zero_output_at_init(rng):
    dit = make()
    x = torch.randn(3, 7, 5, generator=rng)
    out = dit(x, torch.tensor([0, 10, 999]), torch.randn(3, 6, generator=rng))
    assert out.shape == x.shape
    assert out.abs().max() == 0


def test_prompt_and_time_change_output_after_training_step(rng):
    dit = make()
    x, p = torch.randn(4, 7, 5, generator=rng), torch.randn(4, 6, generator=rng)
    n = torch.randint(0, 1000, (4,), generator=rng)
    opt = torch.optim.SGD(dit.parameters(), lr=0.1)
    # A few steps: adaLN-Zero gates start at 0, so gradients first reach the final layer, then the blocks.
    for _ in range(3):
        opt.zero_grad()
        (dit(x, n, p) - torch.randn(4, 7, 5, generator=rng)).square().mean().backward()
        opt.step()
    assert all(b.adaLN_modulation[-1].weight.abs().sum() > 0 for b in dit.blocks)
    out = dit(x, n, p)
    assert not torch.allclose(out, dit(x, n, -p)), "prompt must change the output"
    assert not torch.allclose(out, dit(x, (n + 300) % 1000, p)), "step must change the output"
    # Dropped conditions equal the unconditional path (the learned null embedding).
    drop = torch.tensor([True, False, True, False])
    mixed = dit(x, n, p, drop)
    torch.testing.assert_close(mixed[drop], dit(x, n, None)[drop])
    torch.testing.assert_close(mixed[~drop], out[~drop])


def test_timestep_embedding():
    e = timestep_embedding(torch.tensor([0, 5]), 7)
    assert e.shape == (2, 7)
    torch.testing.assert_close(e[0, :3], torch.ones(3))  # cos(0)


def test_presets_valid():
    assert DIT_PRESETS["paper"].hidden_size == 768 and DIT_PRESETS["paper"].depth == 12


def test_bad_input():
    dit = make()
    with pytest.raises(ValueError, match="x"):
        dit(torch.randn(2, 6, 5), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="prompt"):
        dit(torch.randn(2, 7, 5), torch.zeros(2, dtype=torch.long), torch.randn(2, 5))
    with pytest.raises(ValueError, match="num_heads"):
        DiTConfig(hidden_size=30, num_heads=4)
    with pytest.raises(ValueError, match="prediction"):
        DiTConfig(prediction="x0")
