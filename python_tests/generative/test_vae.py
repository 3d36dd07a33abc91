"""The weight VAE: model shapes and backends, loss terms, paper size, layout checks, and `dynadiff train vae`
end to end on a tiny zoo of a system an FNO represents exactly (checkpoints, resume, quality vs the base)."""

import dataclasses
import json
import math
import os
import subprocess
import sys
import types

import pytest
import torch
from synthetic_systems import Drift, register

from dynadiff_fast import cli
from dynadiff_fast.config import preset_of
from dynadiff_fast.data.presets import DatasetPreset
from dynadiff_fast.experts.batched_fno import BatchedFNO
from dynadiff_fast.experts.configs import ExpertConfig, expert_config
from dynadiff_fast.experts.evaluate import evaluate_experts
from dynadiff_fast.experts.zoo import Zoo
from dynadiff_fast.generative.checkpoint import checkpoint_dirs, read_meta
from dynadiff_fast.generative.vae import (
    VAE_PRESETS,
    VAEConfig,
    WeightVAE,
    check_same_layout,
    expert_outputs,
    functional_loss,
    kl_divergence,
    load_vae,
    reconstruction_loss,
)
from dynadiff_fast.stages import zoo as zoo_build
from dynadiff_fast.stages.simulate import make_dataset
from dynadiff_fast.stages.train_vae import TrainVAEConfig, train_vae
from dynadiff_fast.weightspace.graph import NodeTokens, WeightGraph

SMALL = ExpertConfig(in_channels=1, out_channels=1, hidden_channels=4, n_modes=(4, 4), n_layers=2)
TINY_VAE = VAEConfig(d_model=32, latent_dim=8, n_heads=2, n_layers=1, mlp_ratio=2)


def _experts(cfg, n, seed=0):
    torch.manual_seed(seed)
    return [cfg.build() for _ in range(n)]


# -------------------------------------------------------------------------------------------------
# Model and loss terms
# -------------------------------------------------------------------------------------------------


def test_shapes_and_gradients_reach_every_parameter():
    graph = WeightGraph.from_config(SMALL)
    tokens = graph.encode(_experts(SMALL, 3))
    vae = WeightVAE(TINY_VAE, graph)
    mu, logvar = vae.encode(tokens)
    assert mu.shape == logvar.shape == (3, graph.num_nodes, 8) == (3, *vae.latent_shape)
    recon = vae.decode(mu)
    assert recon.layout == graph and [t.shape for t in recon.groups] == [t.shape for t in tokens.groups]
    recon, mu, logvar = vae(tokens, generator=torch.Generator().manual_seed(0))
    (reconstruction_loss(recon, tokens) + kl_divergence(mu, logvar)).backward()
    silent = [n for n, p in vae.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not silent, f"parameters without gradient: {silent}"
    with pytest.raises(ValueError, match="z: expected shape"):
        vae.decode(mu[:, :-1])


def test_triton_backend_matches_torch():
    graph = WeightGraph.from_config(SMALL)
    tokens = graph.encode(_experts(SMALL, 2))
    torch.manual_seed(0)
    vae = WeightVAE(TINY_VAE, graph)
    vae_tri = WeightVAE(dataclasses.replace(TINY_VAE, backend="triton"), graph)
    vae_tri.load_state_dict(vae.state_dict())
    mu, _ = vae.encode(tokens)
    mu_tri, _ = vae_tri.encode(tokens)
    torch.testing.assert_close(mu_tri, mu, atol=1e-4, rtol=1e-4)
    for a, b in zip(vae_tri.decode(mu).groups, vae.decode(mu).groups):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_loss_terms():
    mu, logvar = torch.tensor([[[1.0, 0.0]]]), torch.tensor([[[0.0, math.log(2.0)]]])
    # KL per entry: 0.5 (mu^2 + sigma^2 - 1 - log sigma^2) -> (0.5, 0.5 (1 - log 2)), averaged
    torch.testing.assert_close(kl_divergence(mu, logvar), torch.tensor(0.25 * (2.0 - math.log(2.0))))
    assert float(kl_divergence(torch.zeros(2, 3, 4), torch.zeros(2, 3, 4))) == 0.0
    graph = WeightGraph.from_config(SMALL)
    tokens = graph.encode(_experts(SMALL, 2))
    shifted = NodeTokens([t + 0.5 for t in tokens.groups], graph)
    torch.testing.assert_close(reconstruction_loss(shifted, tokens), torch.tensor(0.25))
    # functional loss: 0 for the original weights, > 0 and differentiable for perturbed ones
    x = torch.randn(2, 3, 1, 8, 8)
    with torch.no_grad():
        target = BatchedFNO.from_modules(_experts(SMALL, 2))(x)
    assert float(functional_loss(tokens, SMALL, x, target)) < 1e-10
    perturbed = NodeTokens([(t + 0.01 * torch.randn_like(t)).requires_grad_() for t in tokens.groups], graph)
    loss = functional_loss(perturbed, SMALL, x, target)
    loss.backward()
    assert loss > 0 and all(t.grad is not None and t.grad.abs().sum() > 0 for t in perturbed.groups)


def test_expert_outputs_of_a_plain_mlp_expert():
    cfg = expert_config("lotka_volterra", "tiny")
    mods = _experts(cfg, 2)
    graph = WeightGraph.from_config(cfg)
    x = torch.randn(2, 5, 2)
    out = expert_outputs(cfg, graph.decode_stacked(graph.encode(mods)), x)
    torch.testing.assert_close(out, torch.stack([m(xe) for m, xe in zip(mods, x)]))


def test_paper_preset_has_the_papers_size():
    """App. D: 193.16M parameters on the NS FNO with D=1024, latent 512, 8 heads, 4 attention layers."""
    graph = WeightGraph.from_config(expert_config("navier_stokes", "paper"))
    with torch.device("meta"):
        vae = WeightVAE(VAE_PRESETS["paper"], graph)
    n = sum(p.numel() for p in vae.parameters())
    assert abs(n / 193.16e6 - 1.0) < 0.01, n
    with pytest.raises(ValueError, match="d_model: 100 is not divisible by n_heads=8"):
        VAEConfig(d_model=100)
    with pytest.raises(ValueError, match="preset: unknown 'huge'"):
        preset_of(VAE_PRESETS, "huge")


def test_layout_mismatch_names_the_first_layer():
    a = WeightGraph.from_config(SMALL)
    b = WeightGraph.from_config(dataclasses.replace(SMALL, n_modes=(6, 6)))
    check_same_layout(a, a, "zoo")
    with pytest.raises(ValueError, match="mismatch at layer 2: .*'fno_blocks.convs.0'"):
        check_same_layout(a, b, "zoo")
    c = WeightGraph.from_config(dataclasses.replace(SMALL, n_layers=3))
    with pytest.raises(ValueError, match="fno_blocks.convs.2"):
        check_same_layout(a, c, "zoo")


# -------------------------------------------------------------------------------------------------
# Training end to end on a tiny exactly-representable system (Drift, python_tests/synthetic_systems.py)
# -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def zoo_dir(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    register(mp, Drift, DatasetPreset(((0.0, 1.5, 5),), 4, 4, 2, 6, out_fraction=0.0))
    root = tmp_path_factory.mktemp("vae")
    data = make_dataset("drift", "tiny", out=str(root / "drift.h5"), progress=False)
    expert = {"hidden_channels": 4, "n_layers": 1, "n_modes": [4, 4], "lifting_channel_ratio": 1,
              "projection_channel_ratio": 1, "use_channel_mlp": False}  # fmt: skip
    zoo_build.build_zoo(zoo_build.ZooBuildConfig(
        data=str(data), out=str(root / "zoo"), experts_per_env=3, pretrain_epochs=6, finetune_epochs=6,
        lr=1e-2, batch_size=8, val_rollout_steps=3, envs_per_step=4, expert=expert, progress=False,
    ))  # fmt: skip
    yield root / "zoo"
    mp.undo()


def _train_cfg(zoo, out, **kw):
    base = dict(zoo=str(zoo), out=str(out), steps=120, batch_size=6, lr=3e-3, warmup_steps=10, ema_decay=0.9,
                model=dataclasses.asdict(TINY_VAE), func_frames=6, func_batch=3, func_start=0.3, func_ramp=0.2,
                checkpoint_every=40, log_every=20, progress=False)  # fmt: skip
    base.update(kw)
    return TrainVAEConfig(**base)


@pytest.mark.slow
def test_train_vae_reconstructs_experts_better_than_the_base(zoo_dir, tmp_path):
    out = train_vae(_train_cfg(zoo_dir, tmp_path / "run"))
    assert [p.name for p in checkpoint_dirs(out)] == ["step_00000080", "step_00000120"]
    meta = read_meta(out)
    assert meta["complete"] and meta["system_name"] == "drift"
    assert set(meta["losses"]) >= {"loss", "recon", "kl", "func", "func_weight"}
    lines = [json.loads(ln) for ln in (out / "log.jsonl").read_text().splitlines()]
    assert [ln["step"] for ln in lines] == [20, 40, 60, 80, 100, 120]
    assert lines[-1]["recon"] < lines[0]["recon"] and lines[-1]["func_weight"] == 1.0

    quality = json.loads((out / "quality.json").read_text())
    zoo = Zoo.open(zoo_dir)
    vae, graph, normalizer, meta2 = load_vae(out, zoo)
    assert meta2["step"] == 120 and not vae.training
    other = types.SimpleNamespace(config=dataclasses.replace(zoo.config, n_modes=(6, 6)), root="other")
    with pytest.raises(ValueError, match="zoo other: weight-graph layout mismatch at layer 2: .*fno_blocks.convs.0"):
        load_vae(out, other)
    # Relative quality bar: the decoded experts' rollout error is closer to the originals' than the base
    # model's is (the base is what every expert was fine-tuned from: the no-information reconstruction).
    from dynadiff_fast.data import EnvDataset

    with EnvDataset.open(zoo.dataset_info["path"]) as ds:
        steps = quality["rollout_steps"]
        base = BatchedFNO.from_modules([zoo.base_module()] * len(zoo))
        rmse_base = evaluate_experts(base, (ds, zoo.env_index.tolist()), steps, progress=False).mean()
    s = quality["summary"]
    gap_decoded = s["rmse_decoded_mean"] - s["rmse_original_mean"]
    gap_base = float(rmse_base) - s["rmse_original_mean"]
    assert gap_base > 0 and gap_decoded < 0.5 * gap_base, (s, float(rmse_base))


class Interrupted(Exception):
    pass


@pytest.mark.slow
def test_cli_resume_continues_exactly(zoo_dir, tmp_path, monkeypatch):
    """6 steps in one go == killed after the step-3 checkpoint, then re-run: same weights (optimizer, EMA, RNG
    streams and log all continue where the checkpoint left them), with vicinal mixing on (its draws too)."""
    from dynadiff_fast.generative import checkpoint

    common = ["train", "vae", "--zoo", str(zoo_dir), "--steps", "6", "--batch-size", "4", "--lr", "1e-3",
              "--warmup-steps", "2", "--no-quality", "--checkpoint-every", "3", "--log-every", "1",
              "--func-start", "0", "--func-frames", "4", "--no-progress", "-q", "--mix-prob", "0.5", "--mix-span", "0.5",
              "--set", "model.d_model=16",
              "--set", "model.n_layers=1", "--set", "model.latent_dim=4", "--set", "model.n_heads=2"]  # fmt: skip
    assert cli.main([*common, "--out", str(tmp_path / "a")]) == 0

    save = checkpoint.save_checkpoint

    def save_then_die(*args, **kwargs):
        save(*args, **kwargs)
        raise Interrupted

    monkeypatch.setattr(checkpoint, "save_checkpoint", save_then_die)
    with pytest.raises(Interrupted):
        cli.main([*common, "--out", str(tmp_path / "b")])
    monkeypatch.setattr(checkpoint, "save_checkpoint", save)
    assert read_meta(tmp_path / "b")["step"] == 3
    assert cli.main([*common, "--out", str(tmp_path / "b")]) == 0

    a, b = load_vae(tmp_path / "a", ema=False)[0], load_vae(tmp_path / "b", ema=False)[0]
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(x, y, msg=lambda m, n=name: f"{n}: {m}")
    logs = [[json.loads(ln) for ln in (tmp_path / r / "log.jsonl").read_text().splitlines()] for r in "ab"]
    assert [ln["step"] for ln in logs[1]] == [1, 2, 3, 4, 5, 6]
    assert [ln["loss"] for ln in logs[0]] == pytest.approx([ln["loss"] for ln in logs[1]])
    # a finished run returns at once; a different architecture in the same folder is refused
    assert cli.main([*common, "--out", str(tmp_path / "b")]) == 0
    with pytest.raises(ValueError, match="holds a VAE with config"):
        train_vae(_train_cfg(zoo_dir, tmp_path / "b", steps=6, model={"d_model": 32}))


@pytest.mark.slow
def test_two_process_gloo_training(zoo_dir, tmp_path):
    """torchrun with 2 gloo ranks (DDP): the batch is split, rank 0 writes, the run loads and resumes."""
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2", "--master-port=29533",
           "-m", "dynadiff_fast.cli", "train", "vae", "--zoo", str(zoo_dir), "--out", str(out), "--steps", "2",
           "--batch-size", "4", "--checkpoint-every", "1", "--log-every", "1", "--no-quality", "--no-progress", "-q",
           "--set", "model.d_model=16", "--set", "model.n_layers=1", "--set", "model.latent_dim=4"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert read_meta(out)["step"] == 2
    state = torch.load(checkpoint_dirs(out)[-1] / "optimizer.pt", weights_only=True)["state"]
    assert len(state["g_noise"]) == 2  # both ranks' latent-noise streams, for an exact resume
    assert load_vae(out)[0].latent_shape[1] == 4


def test_bad_config_and_missing_inputs(tmp_path):
    with pytest.raises(ValueError, match="zoo: required"):
        train_vae(TrainVAEConfig(out=str(tmp_path)))
    with pytest.raises(ValueError, match="func_batch: 8 exceeds func_frames=4"):
        train_vae(TrainVAEConfig(zoo="z", out=str(tmp_path), func_frames=4, func_batch=8))
    with pytest.raises(ValueError, match=r"config model: unknown key\(s\) \['width'\]; valid: \['backend'"):
        train_vae(TrainVAEConfig(zoo="z", out=str(tmp_path), model={"width": 3}))
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        train_vae(TrainVAEConfig(zoo=str(tmp_path / "nope"), out=str(tmp_path / "run")))
    with pytest.raises(FileNotFoundError, match="holds no VAE checkpoint"):
        load_vae(tmp_path)


def test_resume_tolerates_a_torn_last_log_line(tmp_path):
    """A kill or a full disk mid-write leaves half a JSON line at the end of the log: it is dropped (the resumed run
    writes it again); lines past the checkpoint go too; a damaged line before the last is an error naming it."""
    from dynadiff_fast.stages.common import truncate_log

    log = tmp_path / "log.jsonl"
    log.write_text('{"step": 1, "loss": 0.5}\n{"step": 2, "loss": 0.4}\n{"step": 3, "loss": 0.3}\n{"step": 4, "lo')
    truncate_log(log, 2)
    assert [json.loads(ln)["step"] for ln in log.read_text().splitlines()] == [1, 2]
    log.write_text('{"step": 1}\n{"st\n{"step": 2}\n')
    with pytest.raises(ValueError, match=r"log\.jsonl line 2 is not a JSON record"):
        truncate_log(log, 2)
