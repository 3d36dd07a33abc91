"""kill -9 at random points, several times per long stage, then a re-run: the outputs equal an uninterrupted run's
bit for bit. Each stage is the real command in a subprocess (SIGKILL leaves no chance to clean up), on a micro
Lotka-Volterra setting; a kill lands a seeded random delay after the stage's first output appears, so it hits
the work itself, not the interpreter's start-up."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from safetensors.numpy import load_file

KILLS = 3  # per stage
COMMON = ["-q", "--device", "cpu"]


def _stages(root: Path) -> list[tuple[str, list[str], Path, Path]]:
    """(name, arguments, output, marker: a path that appears once the stage is working)."""
    data, zoo, vae, dit = root / "d.h5", root / "z", root / "r" / "vae", root / "r" / "dit"
    return [
        ("simulate", ["simulate", "--system", "lotka_volterra", "--preset", "tiny", "--n-frames", "20",
                      "--n-train-traj", "8", "--envs-per-call", "1", "--out", str(data), *COMMON],
         data, root / "d.h5.partial"),
        ("zoo", ["zoo", "build", "--data", str(data), "--out", str(zoo), "--experts-per-env", "2",
                 "--pretrain-epochs", "2", "--finetune-epochs", "4", "--envs-per-step", "1", "--val-rollout-steps",
                 "4", "--no-progress", *COMMON], zoo, zoo / "build.json"),
        ("vae", ["train", "vae", "--zoo", str(zoo), "--data", str(data), "--out", str(vae), "--steps", "60",
                 "--checkpoint-every", "10", "--no-quality", "--no-progress", *COMMON], vae, vae / "checkpoints"),
        ("dit", ["train", "dit", "--zoo", str(zoo), "--vae", str(vae), "--data", str(data), "--out", str(dit),
                 "--steps", "60", "--checkpoint-every", "10", "--no-progress", *COMMON], dit, dit / "checkpoints"),
    ]  # fmt: skip


def _run(args: list[str]) -> None:
    subprocess.run([sys.executable, "-m", "dynadiff_fast", *args], check=True, env=_env(), capture_output=True)


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def _kill_at_random(args: list[str], marker: Path, rng: random.Random) -> bool:
    """Start the stage, SIGKILL it ``rng``-chosen seconds after ``marker`` appears; True if it was still running."""
    proc = subprocess.Popen([sys.executable, "-m", "dynadiff_fast", *args], env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    while not marker.exists() and proc.poll() is None:
        time.sleep(0.02)
    time.sleep(rng.uniform(0.0, 1.5))
    alive = proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return alive


def _h5(path: Path) -> dict[str, np.ndarray]:
    out = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: out.__setitem__(name, obj[...]) if isinstance(obj, h5py.Dataset) else None)
        attrs = dict(f.attrs)
    attrs["config"] = json.dumps({k: v for k, v in json.loads(attrs["config"]).items() if k != "out"})
    out.update({f"@{k}": np.asarray(v) for k, v in attrs.items()})
    return out


def _tensors(folder: Path, root: Path) -> dict[str, np.ndarray]:
    """Every tensor of every safetensors file under ``folder`` (by relative path), and its JSON records with the
    run's own root path and wall-clock times taken out."""
    out = {}
    for path in sorted(folder.rglob("*.safetensors")):
        for key, value in load_file(path).items():
            out[f"{path.relative_to(folder)}:{key}"] = value
    for name in ("manifest.json", "quality.json"):
        if (folder / name).exists():
            doc = _untimed(json.loads((folder / name).read_text().replace(str(root), "ROOT")))
            out[name] = np.frombuffer(json.dumps(doc, sort_keys=True).encode(), dtype=np.uint8)
    return out


def _untimed(doc):
    if isinstance(doc, dict):
        return {k: _untimed(v) for k, v in doc.items() if k not in ("seconds", "created")}
    return [_untimed(v) for v in doc] if isinstance(doc, list) else doc


def _outputs(name: str, out: Path, root: Path) -> dict[str, np.ndarray]:
    return _h5(out) if name == "simulate" else _tensors(out, root)


@pytest.mark.slow
def test_every_long_stage_survives_repeated_kill_9_bitwise(tmp_path):
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    rng = random.Random(9)
    hits = {}
    for (name, args, out, _), (_, kargs, kout, marker) in zip(_stages(clean), _stages(killed), strict=True):
        _run(args)
        hits[name] = sum(_kill_at_random(kargs, marker, rng) for _ in range(KILLS))
        _run(kargs)  # resume to the end
        a, b = _outputs(name, out, clean), _outputs(name, kout, killed)
        assert a.keys() == b.keys(), name
        for key in a:
            assert a[key].dtype == b[key].dtype and np.array_equal(a[key], b[key]), f"{name}: {key} differs"
        assert not list(kout.parent.rglob("*.tmp")) and not list(kout.parent.rglob("*.dynadiff-lock"))
    # the kills must have interrupted real work, not finished processes
    assert all(n >= 1 for n in hits.values()), hits


@pytest.mark.parametrize("preset", ["tiny", "bench", "small", "paper"])
def test_every_preset_checkpoints_inside_each_long_stage(preset):
    """A kill must lose part of a stage, not all of it: the zoo fine-tunes seen environments in more than one
    group, and the VAE and the DiT checkpoint before their last step, with every preset's defaults."""
    from dynadiff_fast.data.presets import available, get_preset
    from dynadiff_fast.stages.train_dit import TrainDiTConfig
    from dynadiff_fast.stages.train_dit import resolve as resolve_dit
    from dynadiff_fast.stages.train_vae import TrainVAEConfig
    from dynadiff_fast.stages.train_vae import resolve as resolve_vae
    from dynadiff_fast.stages.zoo import zoo_preset

    for system, p in available():
        if p == preset:
            assert zoo_preset(system, preset).envs_per_step < get_preset(system, preset).n_seen, system
    vae = resolve_vae(TrainVAEConfig(zoo="z", out="o", preset=preset))
    dit = resolve_dit(TrainDiTConfig(zoo="z", vae="v", data="d", out="o", preset=preset))
    assert vae.checkpoint_every < vae.steps and dit.checkpoint_every < dit.steps
