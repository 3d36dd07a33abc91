"""What every batched expert container shares: E experts of one architecture whose weights are stacked along a
leading expert axis (``BatchedFNO`` for the FNO experts, ``BatchedMLP`` for the Lotka–Volterra vector fields).

Code that only knows an expert config gets the container class from ``experts_type(config)``, so every stage
(zoo, VAE, DiT, baselines, evaluation) runs either kind of expert.

Storage: with ``parameters=True`` each stacked tensor is an ``nn.Parameter`` of the container (trainable, moved by
``.to``); with ``parameters=False`` (``from_stacked``) the given tensors are kept as they are, so outputs stay
differentiable with respect to whatever produced them (the VAE's functional loss trains through this).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn


def mangle(key: str) -> str:
    # nn.Module parameter names cannot hold dots; the experts' state-dict keys never hold "__".
    return key.replace(".", "__")


class StackedExperts(nn.Module):
    """Base of the batched experts. Subclasses set ``config`` and ``num_experts``, call ``_store`` in their
    ``__init__``, and define ``from_stacked(config, stacked, **settings)``; ``settings()`` are the keyword
    settings besides the weights that a copy keeps (the FNO's kernel backend; the MLP's time step is in its config)."""

    config: Any
    num_experts: int

    def _store(self, keys: Iterable[str], weights: Mapping[str, torch.Tensor], parameters: bool) -> None:
        self._keys = list(keys)
        self._params = nn.ParameterDict() if parameters else None
        self._plain: dict[str, torch.Tensor] = {}
        for key in self._keys:
            t = weights[key]
            if parameters:
                self._params[mangle(key)] = t if isinstance(t, nn.Parameter) else nn.Parameter(t.detach())
            else:
                self._plain[key] = t

    def settings(self) -> dict[str, Any]:
        return {}

    @classmethod
    def from_stacked(cls, config: Any, stacked: Mapping[str, torch.Tensor], **settings: Any) -> StackedExperts:
        raise NotImplementedError

    # -- access --------------------------------------------------------------------------------------
    def stacked(self) -> dict[str, torch.Tensor]:
        """State-dict key -> ``Tensor[E, *shape]``."""
        if self._params is not None:
            return {k: self._params[mangle(k)] for k in self._keys}
        return dict(self._plain)

    def state_dicts(self) -> list[dict[str, torch.Tensor]]:
        """One state dict of the single-expert module (detached copies) per expert."""
        w = self.stacked()
        return [{k: v[e].detach().clone() for k, v in w.items()} for e in range(self.num_experts)]

    def select(self, idx) -> StackedExperts:
        """The experts ``idx`` (int, slice, list or index tensor) as a container of the same kind; autograd
        reaches ``self``."""
        if isinstance(idx, int):
            idx = [idx]
        elif isinstance(idx, torch.Tensor):
            idx = idx.cpu()
        index = torch.arange(self.num_experts)[idx]
        if index.numel() == 0:
            raise ValueError(f"idx: selects no expert out of {self.num_experts}")
        stacked = {k: v[index.to(v.device)] for k, v in self.stacked().items()}
        return type(self).from_stacked(self.config, stacked, **self.settings())

    @classmethod
    def cat(cls, experts: Sequence[StackedExperts]) -> StackedExperts:
        """Concatenate along the expert axis (one architecture, the same settings); autograd reaches the
        sources."""
        if len(experts) == 0:
            raise ValueError(f"experts: expected at least one {cls.__name__}, got an empty list")
        first = experts[0]
        for i, b in enumerate(experts):
            if (b.config, b.settings()) != (first.config, first.settings()):
                raise ValueError(
                    f"experts: entry {i} has architecture {b.config} {b.settings()}, entry 0 has {first.config} "
                    f"{first.settings()}"
                )
        stacks = [b.stacked() for b in experts]
        weights = {k: torch.cat([st[k] for st in stacks]) for k in stacks[0]}
        return cls.from_stacked(first.config, weights, **first.settings())


def _keys_problem(shapes: Mapping[str, Any], items: Mapping[str, torch.Tensor]) -> str | None:
    missing, extra = sorted(set(shapes) - set(items)), sorted(set(items) - set(shapes))
    if not (missing or extra):
        return None
    return f"missing keys {_first4(missing)}, unexpected keys {_first4(extra)}"


def _first4(keys: list[str]) -> str:
    return f"{keys[:4]}{'...' if len(keys) > 4 else ''}"


def check_state_dict(shapes: Mapping[str, tuple[int, ...]], items: Mapping[str, torch.Tensor], name: str) -> None:
    """One expert's tensors ``items`` against the architecture's ``{key: shape}``; a mismatch names the key."""
    problem = _keys_problem(shapes, items)
    if problem:
        raise ValueError(f"{name}: does not match the architecture ({problem})")
    for k, shape in shapes.items():
        if tuple(items[k].shape) != shape:
            raise ValueError(f"{name}[{k!r}]: shape {tuple(items[k].shape)}, the architecture needs {shape}")


def check_stacked_shapes(shapes: Mapping[str, tuple[int, ...]], items: Mapping[str, torch.Tensor], config: Any) -> int:
    """Stacked tensors ``{key: [E, *shape]}`` against the architecture's ``{key: shape}``: the same keys, one
    leading expert axis ``E >= 1`` on every tensor; returns E. (Dtypes are each container's own check.)"""
    problem = _keys_problem(shapes, items)
    if problem:
        raise ValueError(f"weights: {problem} for {config}")
    sizes = {items[k].shape[0] if items[k].dim() else None for k in shapes}
    if len(sizes) != 1 or None in sizes:
        raise ValueError(
            f"weights: every tensor needs the same leading expert axis E, got sizes {sorted(map(str, sizes))}"
        )
    for k, shape in shapes.items():
        if tuple(items[k].shape[1:]) != shape:
            raise ValueError(
                f"weights[{k!r}]: shape {tuple(items[k].shape)}, expected [E, {', '.join(map(str, shape))}]"
            )
    (E,) = sizes
    if E < 1:
        raise ValueError("weights: E must be >= 1")
    return E


def experts_type(config: Any) -> type[StackedExperts]:
    """The container of ``config``'s experts: ``BatchedFNO`` for an ``ExpertConfig``, ``BatchedMLP`` for an
    ``MLPExpertConfig``."""
    from dynadiff_fast.experts.batched_fno import BatchedFNO
    from dynadiff_fast.experts.batched_mlp import BatchedMLP
    from dynadiff_fast.experts.configs import ExpertConfig, MLPExpertConfig

    if isinstance(config, ExpertConfig):
        return BatchedFNO
    if isinstance(config, MLPExpertConfig):
        return BatchedMLP
    raise TypeError(f"config: expected an ExpertConfig or an MLPExpertConfig, got {type(config).__name__}")
