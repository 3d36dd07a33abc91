"""Checkpoints: exact round trip of weights/EMA/optimizer, resume picks the latest complete step,
pruning, atomicity (a half-written folder is ignored), corruption and mismatch errors."""

import copy
import json

import pytest
import torch
from torch import nn

from dynadiff_fast.generative.checkpoint import (
    checkpoint_dirs,
    latest_checkpoint,
    load_checkpoint,
    read_meta,
    save_checkpoint,
    update_ema,
)


def _model(seed=0, width=5):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, width), nn.LayerNorm(width), nn.Linear(width, 2))


def _tied(seed):
    torch.manual_seed(seed)
    m = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 3))
    m[1].weight = m[0].weight  # tied: safetensors needs distinct storage
    return m


def _train_step(model, opt):
    loss = model(torch.randn(4, 3)).square().mean()
    opt.zero_grad()
    loss.backward()
    opt.step()


def test_round_trip_weights_ema_optimizer(tmp_path):
    model = _model()
    ema = copy.deepcopy(model)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(3):
        _train_step(model, opt)
        update_ema(ema, model, 0.5)
    gen = torch.Generator().manual_seed(7)
    save_checkpoint(
        tmp_path, model, step=3, ema=ema, optimizer=opt, meta={"config": {"d": 5}}, state={"gen": gen.get_state()}
    )

    model2, ema2 = _model(seed=1), _model(seed=2)
    opt2 = torch.optim.Adam(model2.parameters(), lr=1e-2)
    meta = load_checkpoint(tmp_path, model2, ema=ema2, optimizer=opt2)
    assert meta["step"] == 3 and meta["config"] == {"d": 5}
    for a, b in zip(model.state_dict().values(), model2.state_dict().values()):
        assert torch.equal(a, b)
    for a, b in zip(ema.state_dict().values(), ema2.state_dict().values()):
        assert torch.equal(a, b)
    assert not torch.equal(model[0].weight, ema[0].weight)  # the EMA is a distinct set of weights
    assert torch.equal(meta["state"]["gen"], gen.get_state())
    # the restored optimizer continues exactly like the original one
    torch.manual_seed(11)
    _train_step(model, opt)
    torch.manual_seed(11)
    _train_step(model2, opt2)
    for a, b in zip(model.parameters(), model2.parameters()):
        assert torch.equal(a, b)


def test_update_ema_math():
    model, ema = _model(seed=0), _model(seed=1)
    before = ema[0].weight.clone()
    update_ema(ema, model, 0.9)
    torch.testing.assert_close(ema[0].weight, 0.9 * before + 0.1 * model[0].weight)
    with pytest.raises(ValueError, match="decay"):
        update_ema(ema, model, 1.5)


def test_latest_resume_and_pruning(tmp_path):
    model = _model()
    assert load_checkpoint(tmp_path, model) is None and latest_checkpoint(tmp_path) is None
    for step in (1, 5, 12):
        with torch.no_grad():
            model[0].bias.fill_(step)
        save_checkpoint(tmp_path, model, step=step, keep=2)
    assert [p.name for p in checkpoint_dirs(tmp_path)] == ["step_00000005", "step_00000012"]
    other = _model(seed=3)
    assert load_checkpoint(tmp_path, other)["step"] == 12
    assert torch.all(other[0].bias == 12)
    assert load_checkpoint(tmp_path, other, step=5)["step"] == 5
    with pytest.raises(FileNotFoundError, match="step 1 .*have steps: \\[5, 12\\]"):
        load_checkpoint(tmp_path, other, step=1)
    # a half-written folder (killed run) has a hidden temporary name and is never picked up
    (tmp_path / "checkpoints" / ".step_00000099.abc.tmp").mkdir()
    assert latest_checkpoint(tmp_path).name == "step_00000012"
    # re-saving an existing step replaces it
    save_checkpoint(tmp_path, model, step=12, meta={"again": True})
    assert read_meta(tmp_path)["again"] is True


def test_inference_load_of_ema_and_missing_pieces(tmp_path):
    model, ema = _model(seed=0), _model(seed=1)
    save_checkpoint(tmp_path, model, step=0, ema=ema)
    target = _model(seed=4)
    load_checkpoint(tmp_path, ema=target)
    assert torch.equal(target[0].weight, ema[0].weight)
    with pytest.raises(FileNotFoundError, match="optimizer.pt"):
        load_checkpoint(tmp_path, optimizer=torch.optim.SGD(target.parameters(), lr=0.1))
    save_checkpoint(tmp_path, model, step=1)
    with pytest.raises(FileNotFoundError, match="ema.safetensors"):
        load_checkpoint(tmp_path, ema=target)


def test_mismatch_corruption_and_bad_args(tmp_path):
    save_checkpoint(tmp_path, _model(width=5), step=2)
    with pytest.raises(ValueError, match="shape mismatches .*0.weight"):
        load_checkpoint(tmp_path, _model(width=6))
    with pytest.raises(ValueError, match="missing keys"):
        load_checkpoint(tmp_path, nn.Sequential(nn.Linear(3, 5), nn.LayerNorm(5), nn.Linear(5, 2), nn.Linear(2, 2)))
    path = latest_checkpoint(tmp_path) / "model.safetensors"
    path.write_bytes(path.read_bytes()[:-3] + b"xyz")
    with pytest.raises(ValueError, match="checksum mismatch"):
        load_checkpoint(tmp_path, _model())
    with pytest.raises(ValueError, match="reserved"):
        save_checkpoint(tmp_path, _model(), step=3, meta={"step": 1})
    with pytest.raises(ValueError, match="step"):
        save_checkpoint(tmp_path, _model(), step=-1)
    meta_path = latest_checkpoint(tmp_path) / "meta.json"
    meta_path.write_text(json.dumps({"format": "other"}))
    with pytest.raises(ValueError, match="format"):
        read_meta(tmp_path)


def test_tied_weights_and_wrappers(tmp_path):
    model = _tied(0)
    compiled_like = nn.Module()
    compiled_like._orig_mod = model
    save_checkpoint(tmp_path, compiled_like, step=0)
    other = _tied(5)
    load_checkpoint(tmp_path, other)
    assert torch.equal(other[0].weight, model[0].weight)


@pytest.mark.parametrize("damage", ["model", "meta"])
def test_a_damaged_newest_checkpoint_falls_back_to_the_newest_intact_one(tmp_path, caplog, damage):
    model = _model()
    for step in (1, 2, 3):
        with torch.no_grad():
            model[0].bias.fill_(step)
        save_checkpoint(tmp_path, model, step=step, keep=3)
    newest = latest_checkpoint(tmp_path)
    if damage == "model":
        path = newest / "model.safetensors"
        path.write_bytes(path.read_bytes()[:-3] + b"xyz")
    else:
        (newest / "meta.json").write_text('{"format": "dynadiff-checkpoint/1", "st')  # torn write
    other = _model(seed=3)
    with caplog.at_level("WARNING", logger="dynadiff.checkpoint"):
        assert load_checkpoint(tmp_path, other)["step"] == 2
    assert torch.all(other[0].bias == 2)
    assert "step_00000003 is damaged" in caplog.text and "falling back" in caplog.text
    assert read_meta(tmp_path)["step"] == 2
    with pytest.raises(ValueError, match="checksum mismatch|corrupt or truncated"):
        load_checkpoint(tmp_path, other, step=3)  # an explicit step is never swapped for another


def test_every_checkpoint_damaged_is_an_error_naming_them(tmp_path):
    for step in (1, 2):
        save_checkpoint(tmp_path, _model(), step=step)
    for d in checkpoint_dirs(tmp_path):
        (d / "model.safetensors").write_bytes(b"junk")
    with pytest.raises(ValueError, match=r"no intact checkpoint .*step_00000002: .*checksum mismatch.*step_00000001"):
        load_checkpoint(tmp_path, _model())


def test_checkpoint_paths_from_meta_stay_inside_the_folder(tmp_path):
    save_checkpoint(tmp_path, _model(), step=1)
    save_checkpoint(tmp_path, _model(), step=2)
    meta_path = latest_checkpoint(tmp_path) / "meta.json"
    doc = json.loads(meta_path.read_text())
    doc["files"]["../../outside.safetensors"] = "0" * 64
    meta_path.write_text(json.dumps(doc))
    assert load_checkpoint(tmp_path, _model())["step"] == 1  # step 2 names a file outside its folder


def test_checkpoint_folders_get_ordinary_permissions(tmp_path):
    from dynadiff_fast import io

    path = save_checkpoint(tmp_path, _model(), step=0)
    assert path.stat().st_mode & 0o777 == io.ordinary_mode(folder=True)
    assert (path / "model.safetensors").stat().st_mode & 0o777 == io.ordinary_mode()
