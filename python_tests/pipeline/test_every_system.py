"""Every system of the paper through the whole pipeline, on a micro setting of its own: simulate -> zoo -> VAE ->
DiT -> generate -> evaluate (every method; on cylinder_flow every one but prefix fine-tuning, see SLOW_METHODS). Asserts that each stage's outputs exist and are finite, that the
generated expert file loads into the system's expert module, that the report names the system and every method,
and the sanity rule: no method (the prompt controls aside, which are meant to be bad) has an in-domain RMSE above
twice the unadapted base model's."""

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from dynadiff_fast.baselines import METHODS, result_keys
from dynadiff_fast.data import EnvDataset
from dynadiff_fast.eval.protocol import ProtocolConfig
from dynadiff_fast.experts.configs import ExpertConfig, MLPExpertConfig
from dynadiff_fast.experts.zoo import Zoo
from dynadiff_fast.stages.evaluate import EvaluateConfig, run_evaluation
from dynadiff_fast.stages.generate import GenerateConfig, generate_expert
from dynadiff_fast.stages.report import CONTROLS
from dynadiff_fast.stages.simulate import SimulateConfig, simulate_dataset
from dynadiff_fast.stages.train_dit import TrainDiTConfig, train_dit
from dynadiff_fast.stages.train_vae import TrainVAEConfig, train_vae
from dynadiff_fast.stages.zoo import ZooBuildConfig, build_zoo

FNO = {"hidden_channels": 8, "n_modes": [4, 4]}
# the coordinate searches score points^P candidates per level: 5 per axis keeps the two-parameter systems quick
BUDGET = {"conditioned_epochs": 1, "context_epochs": 1, "context_steps": 5, "search_points": 5}
# Prefix fine-tuning's 1000 Adam steps over the 20 environments of the 128 x 64 cylinder lattice take about 7 of
# this test's minutes on one core (84 s for the 4 seen environments alone), so cylinder_flow runs every other
# method; the four other systems run prefix fine-tuning through the same code.
SLOW_METHODS = {"cylinder_flow": ("prefix_finetune", "prefix_finetune_ensemble")}
# system -> (solver overrides, expert overrides): 16x16 grids for the spectral systems
SYSTEMS = {
    "kolmogorov": ({"resolution": 16}, FNO),
    "navier_stokes": ({"resolution": 16}, FNO),
    "lambda_omega": ({"resolution": 16}, FNO),
    # the LBM's own tiny lattice; a 2,000-step burn-in instead of 20,000 (the simulation was 134 of this test's
    # ~500 s on one core; a less developed wake is still a wake for a pipeline test)
    "cylinder_flow": ({"burn_in": 2000}, FNO),
    "lotka_volterra": ({}, {"hidden": 16}),
}


def _finite_json(path) -> None:
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text, path
    json.loads(text)


@pytest.mark.slow
@pytest.mark.parametrize("system", list(SYSTEMS))
def test_system_runs_the_whole_pipeline(system, tmp_path):
    solver, expert = SYSTEMS[system]
    data, zoo_dir, run = tmp_path / "data.h5", tmp_path / "zoo", tmp_path / "run"
    simulate_dataset(
        SimulateConfig(system=system, preset="tiny", out=str(data), n_frames=8, n_train_traj=2, n_test_traj=1,
                       solver=solver),
        progress=False,
    )  # fmt: skip
    common = {"preset": "tiny", "device": "cpu", "progress": False}
    build_zoo(ZooBuildConfig(data=str(data), out=str(zoo_dir), experts_per_env=2, pretrain_epochs=2, finetune_epochs=3,
                             val_rollout_steps=4, expert=expert, **common))  # fmt: skip
    zoo = Zoo.open(zoo_dir)
    kind = MLPExpertConfig if system == "lotka_volterra" else ExpertConfig
    assert zoo.system_name == system and isinstance(zoo.config, kind)
    assert all(math.isfinite(r["val_rmse"]) for r in zoo.records)
    assert all(torch.isfinite(w).all() for sd in zoo.state_dicts() for w in sd.values())

    train_vae(TrainVAEConfig(zoo=str(zoo_dir), data=str(data), out=str(run / "vae"), steps=40, **common))
    train_dit(TrainDiTConfig(zoo=str(zoo_dir), vae=str(run / "vae"), data=str(data), out=str(run / "dit"), steps=40,
                             obs_len=5, **common))  # fmt: skip
    for path in (run / "vae" / "quality.json", run / "dit" / "quality.json"):
        _finite_json(path)

    with EnvDataset.open(data) as ds:
        env = int(ds.split["unseen_out"][0])
    out = tmp_path / "expert.safetensors"
    generate_expert(GenerateConfig(run=str(run), obs=f"{data}:{env}", frames=5, out=str(out), n_samples=2, steps=5))
    doc = json.loads(out.with_suffix(".json").read_text())
    assert doc["system_name"] == system and math.isfinite(doc["prefix_score_mse"])
    module = zoo.config.build()
    module.load_state_dict(load_file(out))  # the written expert is the system's own expert module

    methods = tuple(m for m in METHODS if m not in SLOW_METHODS.get(system, ()))
    ev = EvaluateConfig(run=str(run), data=str(data), zoo=str(zoo_dir), out=str(tmp_path / "eval"), preset="tiny",
                        methods=methods, n_samples=2, device="cpu", strict=True, protocol=ProtocolConfig(obs_len=5),
                        budget=BUDGET)  # fmt: skip
    run_evaluation(ev)
    _finite_json(tmp_path / "eval" / "results.json")
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert results["budget"]["search_points"] == BUDGET["search_points"]
    assert results["system"] == system and set(results["methods"]) == set(result_keys(methods))
    for key, per in results["methods"].items():
        for domain, entry in per.items():
            assert "error" not in entry, (key, domain, entry)
            assert entry["rmse"]["mean"] >= 0, (key, domain)
    assert set(results["sanity"]) <= set(CONTROLS), results["sanity"]
    report = (tmp_path / "eval" / "report.md").read_text()
    assert system in report and all(k in report for k in result_keys(methods))
    figures = {p.name for p in (tmp_path / "eval" / "figures").iterdir()}
    assert {"rollout_in_domain.png", "rollout_out_domain.png", "env_errors.png"} <= figures, figures
