"""Experts' weights as state dicts: their tensors, stacked over an expert axis, repeated.

neuraloperator's ``FNO.state_dict()`` carries a non-tensor ``_metadata`` entry beside the weights; every
place that treats a state dict as weights reads it through ``tensor_entries``. A *stack* is one state dict whose
tensors carry a leading expert axis ``[E, ...]`` (what ``BatchedFNO``/``BatchedMLP`` run and the weight
graph encodes).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch

Stacked = dict[str, torch.Tensor]


def tensor_entries(state: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The tensor entries of ``state`` (a module's ``state_dict()`` or a loaded file), in order."""
    if not isinstance(state, Mapping):
        raise TypeError(f"state dict: expected a mapping of names to tensors, got {type(state).__name__}")
    return {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}


def module_tensors(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """``tensor_entries(module.state_dict())``: the weights and buffers of one module."""
    return tensor_entries(module.state_dict())


def stack_state_dicts(dicts: Sequence[Mapping[str, torch.Tensor]], keys: Iterable[str] | None = None) -> Stacked:
    """``[{key: T}] -> {key: T[E, ...]}`` over ``keys`` (default: the first dict's), a new tensor per key."""
    keys = dicts[0].keys() if keys is None else keys
    return {k: torch.stack([d[k] for d in dicts]) for k in keys}


def repeat_state_dict(single: Mapping[str, torch.Tensor], n: int) -> Stacked:
    """One state dict repeated ``n`` times as a stack: an expanded view, no copy (``.contiguous()`` each
    tensor where the experts are then trained apart)."""
    return {k: v.unsqueeze(0).expand(n, *v.shape) for k, v in single.items()}
