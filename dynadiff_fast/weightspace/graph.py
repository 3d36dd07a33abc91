"""The weight graph (paper sec. 3.1.1, Fig. 8): a network's weights as ragged node tokens, and back.

One node per output neuron (Linear) / output channel (Conv, SpectralConv) of every layer, its feature every
weight leading into it, then its bias; the node order and feature layout are ``weightspace.layout``'s.
Permuting one channel space consistently (nodes of the groups writing to it and input blocks of the segments
reading from it) leaves the network's function unchanged (``permute_hidden`` on modules / state dicts,
``WeightGraph.permute_stacked`` / ``permute_tokens``).

Tokens are batched over experts: ``NodeTokens.groups[g]`` is ``[E, n_nodes_g, feat_g]``. Encoding and
decoding only copy values (complex -> (re, im) and back), so the round trip is bitwise exact, and
``decode_stacked`` keeps autograd from the stacked weights back to the tokens (the VAE's functional loss).

    graph = WeightGraph.from_config(cfg)                  # or .from_module(fno), .from_state_dict(sd)
    tokens = graph.encode(experts)                        # module | state dict | list of those | BatchedFNO
    values, offsets, lengths, group_id = tokens.packed()  # flat view for the ragged kernels
    bf = BatchedFNO.from_stacked(cfg, graph.decode_stacked(tokens))   # differentiable in tokens
    state_dicts = graph.decode(tokens)                    # one detached state dict per expert
    fno_p = permute_hidden(fno, perm)                     # same function, permuted hidden channels
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from dynadiff_fast.state_dict import stack_state_dicts, tensor_entries
from dynadiff_fast.weightspace.layout import (
    HIDDEN,
    SPECTRAL,
    NodeGroup,
    check_fno_supported,
    decode_segment,
    encode_segment,
    fno_groups,
    in_dim,
    is_fno,
    make_group,
    out_dim,
    plain_module_groups,
    plain_state_groups,
)

# ----------------------------------------------------------------------------------------------------
# Tokens
# ----------------------------------------------------------------------------------------------------


@dataclass(eq=False)
class NodeTokens:
    """Ragged node tokens of ``E`` experts: ``groups[g]`` is ``[E, n_nodes_g, feat_g]`` (layout: the graph)."""

    groups: list[torch.Tensor]
    layout: WeightGraph = field(repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.layout, WeightGraph):
            raise TypeError(f"layout: expected a WeightGraph, got {type(self.layout).__name__}")
        self.groups = self.layout.check_groups(list(self.groups), "groups")

    @property
    def num_experts(self) -> int:
        return self.groups[0].shape[0]

    @property
    def dtype(self) -> torch.dtype:
        return self.groups[0].dtype

    @property
    def device(self) -> torch.device:
        return self.groups[0].device

    def to(self, *args, **kwargs) -> NodeTokens:
        return NodeTokens([t.to(*args, **kwargs) for t in self.groups], self.layout)

    def detach(self) -> NodeTokens:
        return NodeTokens([t.detach() for t in self.groups], self.layout)

    def select(self, index) -> NodeTokens:
        """Experts ``index`` (int, slice, list or index tensor); an int keeps the expert axis."""
        if isinstance(index, int):
            index = slice(index, index + 1 or None)  # -1 -> slice(-1, None)
        return NodeTokens([t[index] for t in self.groups], self.layout)

    @staticmethod
    def cat(tokens: Sequence[NodeTokens]) -> NodeTokens:
        """Concatenate along the expert axis (all must share one layout)."""
        if not tokens:
            raise ValueError("tokens: expected at least one NodeTokens, got an empty sequence")
        layout = tokens[0].layout
        for i, t in enumerate(tokens[1:], 1):
            if t.layout != layout:
                raise ValueError(f"tokens[{i}]: its weight graph differs from tokens[0]'s")
        return NodeTokens([torch.cat(gs, dim=0) for gs in zip(*(t.groups for t in tokens))], layout)

    def packed(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Flat view for the ragged kernels: every node's features concatenated in node order.

        Returns ``(values [E, total_len], offsets [N], lengths [N], group_id [N])`` (index tensors int64 on
        the tokens' device; node ``n`` of expert ``e`` is ``values[e, offsets[n] : offsets[n] + lengths[n]]``).
        """
        values = torch.cat([t.reshape(t.shape[0], -1) for t in self.groups], dim=1)
        offsets, lengths, group_id = (x.to(values.device) for x in self.layout.packed_index())
        return values, offsets, lengths, group_id

    @staticmethod
    def from_packed(values: torch.Tensor, layout: WeightGraph) -> NodeTokens:
        """Inverse of ``packed()``: ``values [E, total_len]`` -> tokens (views of ``values``)."""
        if values.dim() != 2 or values.shape[1] != layout.total_length:
            raise ValueError(
                f"values: expected shape [E, {layout.total_length}] for this weight graph, got {tuple(values.shape)}"
            )
        sizes = [g.n_nodes * g.feature_length for g in layout.groups]
        chunks = torch.split(values, sizes, dim=1)
        return NodeTokens(
            [c.view(values.shape[0], g.n_nodes, g.feature_length) for c, g in zip(chunks, layout.groups)], layout
        )


# ----------------------------------------------------------------------------------------------------
# The graph
# ----------------------------------------------------------------------------------------------------


class WeightGraph:
    """Layout of one architecture's weight graph; encodes weights to ``NodeTokens`` and decodes them back.

    Build with ``from_module`` (neuraloperator FNO or a plain Linear/Conv net), ``from_config`` (an
    ``ExpertConfig``: anything with ``.build()``), ``from_state_dict`` (layout inferred from keys/shapes)
    or ``from_dict`` (the JSON form from ``to_dict``).
    """

    def __init__(self, groups: Sequence[NodeGroup], kind: str):
        self.groups: tuple[NodeGroup, ...] = tuple(groups)
        self.kind = kind  # "fno" | "plain"
        if not self.groups:
            raise ValueError("groups: a weight graph needs at least one layer")
        self._segments = {s.key: (g, s) for g in self.groups for s in g.segments}
        self._packed_index: tuple[torch.Tensor, ...] | None = None

    # -- construction -----------------------------------------------------------------------------

    @classmethod
    def from_module(cls, module: nn.Module) -> WeightGraph:
        """Graph of a neuraloperator ``FNO`` (or a ``BatchedFNO``'s experts) or of a plain Linear/ConvNd net."""
        if not isinstance(module, nn.Module):
            raise TypeError(f"module: expected a torch.nn.Module, got {type(module).__name__}")
        if hasattr(module, "stacked") and hasattr(module, "config"):  # BatchedFNO: one expert's layout
            return cls.from_config(module.config)
        if is_fno(module):
            check_fno_supported(module)
            graph = cls(fno_groups(tensor_entries(module.state_dict())), "fno")
        else:
            graph = cls(plain_module_groups(module), "plain")
        covered = set(graph.keys)
        for name, _ in module.named_parameters():
            if name not in covered:
                raise ValueError(f"module: parameter {name!r} is not covered by the weight graph")
        return graph

    @classmethod
    def from_config(cls, config: Any) -> WeightGraph:
        """Graph of the expert architecture ``config.build()`` builds (built on the meta device: no memory)."""
        if not hasattr(config, "build"):
            raise TypeError(f"config: expected an ExpertConfig (with .build()), got {type(config).__name__}")
        with torch.device("meta"):
            module = config.build()
        return cls.from_module(module)

    @classmethod
    def from_state_dict(cls, state_dict: Mapping[str, Any]) -> WeightGraph:
        """Infer the layout from a state dict's keys and shapes (neuraloperator FNO keys, else a plain net
        whose layers are ``<name>.weight`` (+ ``<name>.bias``) in dict order)."""
        items = tensor_entries(state_dict)
        if any(k.startswith("fno_blocks.convs.") for k in items):
            return cls(fno_groups(items), "fno")
        return cls(plain_state_groups(items), "plain")

    # -- JSON form --------------------------------------------------------------------------------

    def to_dict(self) -> dict:
        """JSON-serialisable description (store it beside a VAE / zoo; ``from_dict`` rebuilds the graph)."""
        return {
            "kind": self.kind,
            "groups": [
                {
                    "name": g.name,
                    "space": g.space,
                    "segments": [
                        {"key": s.key, "kind": s.kind, "shape": list(s.shape), "in_space": s.in_space}
                        for s in g.segments
                    ],
                }
                for g in self.groups
            ],
        }

    @classmethod
    def from_dict(cls, spec: Mapping) -> WeightGraph:
        groups = [
            make_group(
                g["name"], g["space"], [(s["key"], s["kind"], tuple(s["shape"]), s["in_space"]) for s in g["segments"]]
            )
            for g in spec["groups"]
        ]
        return cls(groups, spec["kind"])

    # -- sizes ------------------------------------------------------------------------------------

    @property
    def num_nodes(self) -> int:
        return sum(g.n_nodes for g in self.groups)

    @property
    def group_sizes(self) -> tuple[int, ...]:
        return tuple(g.n_nodes for g in self.groups)

    @property
    def feature_lengths(self) -> tuple[int, ...]:
        return tuple(g.feature_length for g in self.groups)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(g.name for g in self.groups)

    @property
    def keys(self) -> tuple[str, ...]:
        """State-dict keys covered, in layout order."""
        return tuple(self._segments)

    @property
    def total_length(self) -> int:
        """Scalars per expert (= parameter count, complex counted twice)."""
        return sum(g.n_nodes * g.feature_length for g in self.groups)

    def packed_index(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(offsets, lengths, group_id)``, int64 [num_nodes] on CPU, for ``NodeTokens.packed``."""
        if self._packed_index is None:
            lengths = torch.cat([torch.full((g.n_nodes,), g.feature_length) for g in self.groups]).long()
            offsets = torch.cumsum(lengths, 0) - lengths
            group_id = torch.cat([torch.full((g.n_nodes,), i) for i, g in enumerate(self.groups)]).long()
            self._packed_index = (offsets, lengths, group_id)
        return self._packed_index

    def describe(self) -> str:
        """Table of groups: name, nodes, feature length and its segments."""
        rows = [
            f"{self.kind} weight graph: {len(self.groups)} groups, {self.num_nodes} nodes, {self.total_length} scalars"
        ]
        for g in self.groups:
            segs = " + ".join(f"{s.kind}:{s.length}" for s in g.segments)
            rows.append(f"  {g.name:<36} {g.n_nodes:>5} x {g.feature_length:<7} [{segs}]")
        return "\n".join(rows)

    def __repr__(self) -> str:
        return f"WeightGraph(kind={self.kind!r}, groups={len(self.groups)}, num_nodes={self.num_nodes})"

    def __eq__(self, other) -> bool:
        return isinstance(other, WeightGraph) and self.kind == other.kind and self.groups == other.groups

    def __hash__(self) -> int:
        return hash((self.kind, self.groups))

    # -- encode -----------------------------------------------------------------------------------

    def encode(self, source) -> NodeTokens:
        """Weights -> tokens. ``source``: a module, a state dict, a list of those (one expert each), or a
        ``BatchedFNO`` (anything with ``.stacked()``). Tokens have the weights' real dtype and device."""
        if hasattr(source, "stacked") and not isinstance(source, Mapping):
            return self.encode_stacked(source.stacked())
        if isinstance(source, (nn.Module, Mapping)):
            source = [source]
        if not isinstance(source, (list, tuple)):
            raise TypeError(
                f"source: expected a module, a state dict, a list of those or a BatchedFNO, got {type(source).__name__}"
            )
        if not source:
            raise ValueError("source: empty list; need at least one expert")
        dicts = []
        for i, item in enumerate(source):
            if isinstance(item, nn.Module):
                item = item.state_dict()
            if not isinstance(item, Mapping):
                raise TypeError(f"source[{i}]: expected a module or a state dict, got {type(item).__name__}")
            dicts.append(self._check_state_dict(tensor_entries(item), f"source[{i}]", batched=False))
        stacked = stack_state_dicts(dicts, self.keys)
        return self._encode_checked(stacked)

    def encode_stacked(self, stacked: Mapping[str, torch.Tensor]) -> NodeTokens:
        """``{key: Tensor[E, *shape]}`` (``BatchedFNO.stacked()`` form) -> tokens; differentiable."""
        return self._encode_checked(self._check_state_dict(tensor_entries(stacked), "stacked", batched=True))

    def _encode_checked(self, stacked: dict[str, torch.Tensor]) -> NodeTokens:
        groups = []
        for g in self.groups:
            parts = [encode_segment(stacked[s.key], s) for s in g.segments]
            groups.append(parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1))
        return NodeTokens(groups, self)

    # -- decode -----------------------------------------------------------------------------------

    def decode_stacked(self, tokens: NodeTokens) -> dict[str, torch.Tensor]:
        """Tokens -> ``{key: Tensor[E, *shape]}`` (contiguous; spectral weights complex), differentiable:
        feed ``BatchedFNO.from_stacked`` and gradients flow back to ``tokens``."""
        groups = _groups_of(tokens, self)
        out = {}
        for g, t in zip(self.groups, groups):
            for s in g.segments:
                out[s.key] = decode_segment(t[..., s.offset : s.offset + s.length], s)
        return out

    def decode(self, tokens: NodeTokens) -> list[dict[str, torch.Tensor]]:
        """Tokens -> one state dict per expert (detached copies; load with ``module.load_state_dict``)."""
        with torch.no_grad():
            stacked = self.decode_stacked(tokens)
        return [{k: v[e].clone() for k, v in stacked.items()} for e in range(_groups_of(tokens, self)[0].shape[0])]

    # -- permutation symmetry ---------------------------------------------------------------------

    def permute_stacked(self, stacked: Mapping[str, torch.Tensor], perm, space: str = HIDDEN) -> dict:
        """Permute the channels of ``space`` in stacked weights ``{key: [E, *shape]}``: nodes of the groups
        writing to it and the input axis of the weights reading from it. The function is unchanged."""
        stacked = self._check_state_dict(tensor_entries(stacked), "stacked", batched=True)
        perm = self._check_perm(perm, space)
        out = {}
        for g in self.groups:
            for s in g.segments:
                t = stacked[s.key]
                if g.space == space:
                    t = t.index_select(out_dim(s) + 1, perm.to(t.device))
                if s.is_weight and s.in_space == space:
                    t = t.index_select(in_dim(s) + 1, perm.to(t.device))
                out[s.key] = t
        return out

    def permute_tokens(self, tokens: NodeTokens, perm, space: str = HIDDEN) -> NodeTokens:
        """The same permutation applied to tokens (nodes and input blocks inside features)."""
        groups = _groups_of(tokens, self)
        perm = self._check_perm(perm, space)
        out = []
        for g, t in zip(self.groups, groups):
            p = perm.to(t.device)
            if g.space == space:
                t = t.index_select(1, p)
            parts = []
            for s in g.segments:
                part = t[..., s.offset : s.offset + s.length]
                if s.is_weight and s.in_space == space:
                    blocks = part.reshape(*part.shape[:2], s.n_in, s.per_in).index_select(2, p)
                    part = blocks.reshape(part.shape)
                parts.append(part)
            out.append(torch.cat(parts, dim=-1))
        return NodeTokens(out, self)

    def space_size(self, space: str) -> int:
        sizes = {g.n_nodes for g in self.groups if g.space == space}
        if not sizes:
            spaces = sorted({g.space for g in self.groups})
            raise ValueError(f"space: {space!r} is not a channel space of this graph (spaces: {spaces})")
        return sizes.pop()

    def _check_perm(self, perm, space: str) -> torch.Tensor:
        n = self.space_size(space)
        perm = torch.as_tensor(perm, dtype=torch.long)
        if perm.shape != (n,) or not torch.equal(torch.sort(perm).values, torch.arange(n)):
            raise ValueError(f"perm: expected a permutation of range({n}) for space {space!r}, got {perm.tolist()}")
        return perm

    # -- validation -------------------------------------------------------------------------------

    def _check_state_dict(self, items: dict[str, torch.Tensor], name: str, *, batched: bool) -> dict:
        """Keys and shapes in layout order; the first mismatch raises, naming the layer, key and shapes."""
        experts = None
        for g in self.groups:
            for s in g.segments:
                if s.key not in items:
                    raise ValueError(
                        f"{name}: missing key {s.key!r} (layer {g.name!r}, expected shape {_fmt(s.shape, batched)})"
                    )
                t = items[s.key]
                shape = tuple(t.shape[1:]) if batched and t.dim() else tuple(t.shape)
                if shape != s.shape or (batched and t.dim() == 0):
                    raise ValueError(
                        f"{name}: key {s.key!r} (layer {g.name!r}) has shape {tuple(t.shape)}, the weight graph "
                        f"expects {_fmt(s.shape, batched)}"
                    )
                if t.is_complex() != (s.kind == SPECTRAL) or not (t.is_floating_point() or t.is_complex()):
                    raise TypeError(
                        f"{name}: key {s.key!r} has dtype {t.dtype}; layer {g.name!r} expects "
                        f"{'a complex' if s.kind == SPECTRAL else 'a real floating'} tensor"
                    )
                if batched:
                    if experts is None:
                        experts = t.shape[0]
                    elif t.shape[0] != experts:
                        raise ValueError(f"{name}: key {s.key!r} has {t.shape[0]} experts, earlier keys {experts}")
        extra = [k for k in items if k not in self._segments]
        if extra:
            raise ValueError(
                f"{name}: unexpected key {extra[0]!r} {tuple(items[extra[0]].shape)} not in the weight graph"
            )
        return items

    def check_groups(self, groups: list[torch.Tensor], name: str) -> list[torch.Tensor]:
        if len(groups) != len(self.groups):
            raise ValueError(f"{name}: expected {len(self.groups)} groups for this weight graph, got {len(groups)}")
        experts = groups[0].shape[0] if groups and groups[0].dim() else None
        for i, (g, t) in enumerate(zip(self.groups, groups)):
            if not isinstance(t, torch.Tensor):
                raise TypeError(f"{name}[{i}]: expected a torch.Tensor, got {type(t).__name__}")
            if t.dim() != 3 or tuple(t.shape[1:]) != (g.n_nodes, g.feature_length) or t.shape[0] != experts:
                raise ValueError(
                    f"{name}[{i}] (layer {g.name!r}): expected shape [{experts}, {g.n_nodes}, {g.feature_length}], "
                    f"got {tuple(t.shape)}"
                )
            if not t.is_floating_point():
                raise TypeError(f"{name}[{i}] (layer {g.name!r}): expected a real floating tensor, got {t.dtype}")
        return groups


# ----------------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------------


def permute_hidden(module_or_state_dict, perm, space: str = HIDDEN):
    """Permute an FNO's hidden (residual-stream) channels consistently; returns the same kind of object
    (a permuted deep copy of a module, or a new state dict). ``space`` selects another channel space
    (e.g. a plain net's layer name, or an FNO channel-MLP's hidden layer ``'fno_blocks.channel_mlp.0.fcs.0'``)."""
    src = module_or_state_dict
    if isinstance(src, nn.Module):
        graph, state = WeightGraph.from_module(src), src.state_dict()
    elif isinstance(src, Mapping):
        state = src
        graph = WeightGraph.from_state_dict(state)
    else:
        raise TypeError(f"module_or_state_dict: expected an nn.Module or a state dict, got {type(src).__name__}")
    items = tensor_entries(state)
    permuted = graph.permute_stacked({k: v.unsqueeze(0) for k, v in items.items()}, perm, space)
    new_state = {k: v[0] for k, v in permuted.items()}
    if isinstance(src, nn.Module):
        out = copy.deepcopy(src)
        with torch.no_grad():
            for name, p in list(out.named_parameters()) + list(out.named_buffers()):
                if name in new_state:
                    p.copy_(new_state[name])
        return out
    return {**state, **new_state}


def _groups_of(tokens, graph: WeightGraph) -> list[torch.Tensor]:
    """Validated group tensors of ``tokens`` (NodeTokens of ``graph``'s layout, or a list of groups)."""
    if isinstance(tokens, NodeTokens):
        if tokens.layout is not graph and tokens.layout != graph:
            raise ValueError("tokens: they were encoded with a different weight graph (layout) than this one")
        return tokens.groups
    if isinstance(tokens, (list, tuple)):
        return graph.check_groups(list(tokens), "tokens")
    raise TypeError(f"tokens: expected NodeTokens or a list of group tensors, got {type(tokens).__name__}")


def _fmt(shape: tuple[int, ...], batched: bool) -> str:
    return f"[E, {', '.join(map(str, shape))}]" if batched else str(shape)
