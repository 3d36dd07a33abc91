"""Expert configs per system/preset: Table 3 values, buildable neuraloperator FNOs, LV MLP, errors."""

import pytest
import torch
from neuralop.models import FNO

from dynadiff_fast.experts import expert_config, make_expert
from dynadiff_fast.experts.configs import PRESETS, ExpertConfig, MLPExpertConfig, rk4_step

FIELD_SYSTEMS = ("cylinder_flow", "lambda_omega", "kolmogorov", "navier_stokes")


def test_paper_preset_is_table_3():
    table = {  # channels, n_modes, n_layers (paper App. C, Table 3); hidden 64
        "cylinder_flow": (2, (12, 6), 4),
        "lambda_omega": (2, (8, 8), 4),
        "kolmogorov": (3, (8, 8), 8),
        "navier_stokes": (3, (8, 8), 8),
    }
    for system, (c, modes, layers) in table.items():
        cfg = expert_config(system, "paper")
        assert (cfg.in_channels, cfg.out_channels, cfg.n_modes, cfg.n_layers, cfg.hidden_channels) == (
            c,
            c,
            modes,
            layers,
            64,
        )
        assert cfg.positional_embedding == "grid"


@pytest.mark.parametrize("system", FIELD_SYSTEMS)
@pytest.mark.parametrize("preset", PRESETS)
def test_make_expert_builds_fno_with_config(system, preset):
    cfg = expert_config(system, preset)
    model = make_expert(system, preset)
    assert isinstance(model, FNO)
    assert ExpertConfig.from_module(model) == cfg
    if preset == "tiny":
        assert cfg.hidden_channels <= 24 and cfg.n_layers == 4 and max(cfg.n_modes) <= 8
    grid = (64, 32) if system == "cylinder_flow" else (32, 32)
    x = torch.randn(2, cfg.in_channels, *grid)
    with torch.no_grad():
        assert model(x).shape == (2, cfg.out_channels, *grid)


def test_overrides_and_weight_modes():
    cfg = expert_config("kolmogorov", "tiny", in_channels=1, out_channels=1)
    assert cfg.in_channels == 1 and cfg.weight_modes == (8, 5)
    w = cfg.build().fno_blocks.convs[0].weight
    assert tuple(w.shape[-2:]) == cfg.weight_modes


def test_lotka_volterra_mlp_vector_field():
    cfg = expert_config("lotka_volterra", "paper")
    assert isinstance(cfg, MLPExpertConfig) and cfg.hidden == 128  # App. H.6: 2-layer tanh MLP, hidden 128
    f = make_expert("lotka_volterra", "tiny")
    assert isinstance(f, torch.nn.Sequential)
    assert [type(m).__name__ for m in f] == ["Linear", "Tanh", "Linear"]
    x = torch.rand(5, 2, dtype=torch.float64)
    lin = torch.nn.Linear(2, 2, bias=False).double()  # linear field: RK4 matches exp(A dt) to O(dt^5)
    with torch.no_grad():
        exact = x @ torch.linalg.matrix_exp(0.1 * lin.weight).T
        assert torch.allclose(rk4_step(lin, x, 0.1), exact, atol=1e-7)
        assert f(x.float()).shape == (5, 2)
        # the expert is one RK4 step of its vector field, of the config's dt
        assert f.dt == cfg.dt == 0.1
        assert torch.equal(f(x.float()), rk4_step(f.field, x.float(), 0.1))


def test_bad_arguments():
    with pytest.raises(ValueError, match="preset"):
        expert_config("kolmogorov", "huge")
    with pytest.raises(ValueError, match="system_name"):
        expert_config("burgers", "tiny")
    with pytest.raises(ValueError, match="n_modes"):
        ExpertConfig(2, 2, 16, (8,), 4)
    with pytest.raises(ValueError, match="fno_skip"):
        ExpertConfig(2, 2, 16, (8, 8), 4, fno_skip="dense")
    with pytest.raises(ValueError, match="hidden_channels"):
        ExpertConfig(2, 2, 0, (8, 8), 4)
    with pytest.raises(TypeError, match="FNO"):
        ExpertConfig.from_module(torch.nn.Linear(2, 2))
    # an override of another kind's field (the zoo's --expert) names the valid fields
    with pytest.raises(ValueError, match=r"config expert: unknown key\(s\) \['hidden'\].*hidden_channels"):
        expert_config("kolmogorov", "tiny", hidden=8)
    with pytest.raises(ValueError, match=r"config expert: unknown key\(s\) \['hidden_channels'\].*state_dim"):
        expert_config("lotka_volterra", "tiny", hidden_channels=8)


@pytest.mark.parametrize("system", FIELD_SYSTEMS)
def test_channels_match_the_system(system):
    from dynadiff_fast.systems import system_class

    n = len(system_class(system).channel_names)
    for preset in PRESETS:
        cfg = expert_config(system, preset)
        assert cfg.in_channels == cfg.out_channels == n


def test_expert_configs_round_trip_through_the_manifest_dict():
    from dynadiff_fast.experts.configs import config_from_dict

    for cfg in (expert_config("kolmogorov", "tiny"), expert_config("lotka_volterra", "tiny")):
        d = cfg.to_dict()
        assert type(cfg).from_dict(d) == cfg and config_from_dict(d) == cfg
        assert isinstance(d, dict) and all(not hasattr(v, "__dataclass_fields__") for v in d.values())
    with pytest.raises(ValueError, match="expert_config: unknown key"):
        config_from_dict({**expert_config("kolmogorov", "tiny").to_dict(), "n_mode": 3})
