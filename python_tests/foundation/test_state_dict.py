"""State-dict helpers: tensors only, stacking over an expert axis, repetition as a view."""

import pytest
import torch

from dynadiff_fast.experts.configs import expert_config
from dynadiff_fast.state_dict import module_tensors, repeat_state_dict, stack_state_dicts, tensor_entries


def test_tensor_entries_drop_neuraloperators_metadata_and_refuse_non_mappings():
    module = expert_config("kolmogorov", "tiny").build()
    raw = module.state_dict()
    assert any(not isinstance(v, torch.Tensor) for v in raw.values())  # neuraloperator's "_metadata"
    kept = module_tensors(module)
    assert list(kept) == [k for k, v in raw.items() if isinstance(v, torch.Tensor)]
    with pytest.raises(TypeError, match="state dict: expected a mapping of names to tensors, got list"):
        tensor_entries([1, 2])


def test_stack_and_repeat():
    a, b = {"w": torch.randn(3, 2), "b": torch.randn(2)}, {"w": torch.randn(3, 2), "b": torch.randn(2)}
    stacked = stack_state_dicts([a, b])
    assert list(stacked) == ["w", "b"] and stacked["w"].shape == (2, 3, 2)
    torch.testing.assert_close(stacked["b"][1], b["b"])
    assert list(stack_state_dicts([a, b], ["b"])) == ["b"]
    rep = repeat_state_dict(a, 4)
    assert rep["w"].shape == (4, 3, 2) and rep["w"].data_ptr() == a["w"].data_ptr()  # a view, no copy
    torch.testing.assert_close(rep["w"][3], a["w"])
