"""The weight graph's layout (paper sec. 3.1.1, Fig. 8): which weights make which node's feature.

One node per output neuron (Linear) / output channel (Conv, SpectralConv) of every layer. A node's feature
is every weight leading into it, flattened and concatenated, then its bias: a Linear layer gives ``D_out``
nodes of ``D_in + 1`` features, a Conv ``C_out`` nodes of ``C_in * k + 1``. Skip connections are appended
to the node where they merge into the main path, so ``num_nodes`` is the total count of output channels.

Node order and grouping (one group per layer, groups in forward data-flow order):

    neuraloperator FNO                                 nodes            feature (in this order)
    lifting.fcs.j            (j = 0 .. n-1)            its out channels [weight: C_in | bias]
    per block l = 0 .. n_layers-1:
      fno_blocks.convs.l     (+ fno_skips.l)           hidden           [spectral | skip | bias]
      fno_blocks.channel_mlp.l.fcs.j   (j < last)      mlp hidden       [weight | bias]
      fno_blocks.channel_mlp.l.fcs.last (+ channel_mlp_skips.l)  hidden [weight | skip | bias]
    projection.fcs.j                                   its out channels [weight | bias]

    plain Linear / Conv nets: one group per Linear/ConvNd in registration order (``nn.Sequential``
    order = forward order); skips cannot be read off a plain module, so none are merged.

Inside a feature the weights are input-major: for every input node, the entries connecting it to this
node. Dense / Conv weights: ``C_in`` blocks of the kernel (``prod(kernel)`` entries, row-major). Spectral
weights (neuraloperator layout ``[C_in, C_out, *modes]``, complex, last mode axis already halved by the
rfft): ``C_in`` blocks of ``2 * prod(modes)`` reals, modes row-major in neuraloperator's order (leading
axes fftshift-ed, frequencies ``-m//2 .. (m+1)//2 - 1``; last axis ``0 .. m//2``), (real, imag) interleaved. A
``linear`` skip contributes ``C_in`` entries, a ``soft-gating`` skip one (its per-channel gate), an
``identity`` skip none. Conv1d-with-kernel-1 layers (ChannelMLP, skips) are Linear layers here.

Each group's nodes live in a channel *space*; each segment reads from an input space. The FNO's residual
stream is the space ``"hidden"``: the last lifting layer, every spectral conv and every last channel-MLP
layer write to it. Permuting one space's channels consistently leaves the network's function unchanged
(the symmetry ``weightspace.graph`` applies).

The layout is read off a module or a state dict here (``fno_groups``, ``plain_module_groups``,
``plain_state_groups``); ``encode_segment`` / ``decode_segment`` move one tensor to its nodes' features and
back (pure copies). ``weightspace.graph.WeightGraph`` holds a layout and encodes whole experts with it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

HIDDEN = "hidden"  # the FNO residual-stream channel space
INPUT = "input"  # the network's input channels (never permuted)

# Segment kinds: how a state-dict tensor maps onto the feature slots of its group's nodes.
DENSE = "dense"  # [C_out, C_in, *kernel]  (Linear, ConvNd, Conv1d skips)
SPECTRAL = "spectral"  # complex [C_in, C_out, *modes]  (neuraloperator SpectralConv, dense weight)
GATE = "gate"  # [1, C, 1, ...]  per-channel soft gate: one entry per node, input = the node's own channel
BIAS = "bias"  # [C_out] or [C_out, 1, ...]


# ----------------------------------------------------------------------------------------------------
# Layout
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Segment:
    """One state-dict tensor's share of a group's node features.

    ``shape`` is the per-expert tensor shape; the segment occupies features ``[offset, offset + length)``
    of every node, laid out as ``n_in`` input blocks of ``per_in`` entries (``length = n_in * per_in``).
    ``in_space`` names the channel space its inputs index (None for biases and gates: no input axis).
    """

    key: str
    kind: str
    shape: tuple[int, ...]
    offset: int
    n_in: int
    per_in: int
    in_space: str | None

    @property
    def length(self) -> int:
        return self.n_in * self.per_in

    @property
    def is_weight(self) -> bool:
        """True for segments with an input-node axis (dense and spectral weights)."""
        return self.kind in (DENSE, SPECTRAL)


@dataclass(frozen=True)
class NodeGroup:
    """One layer's nodes: ``n_nodes`` output channels in channel space ``space``, ``feature_length`` each."""

    name: str
    n_nodes: int
    space: str
    segments: tuple[Segment, ...]

    @property
    def feature_length(self) -> int:
        return sum(s.length for s in self.segments)


def _segment(key, kind, shape, offset, in_space) -> Segment:
    shape = tuple(int(s) for s in shape)
    if kind == DENSE:
        n_in, per_in = shape[1], math.prod(shape[2:])
    elif kind == SPECTRAL:
        n_in, per_in = shape[0], 2 * math.prod(shape[2:])
    else:  # GATE, BIAS: one entry per node
        n_in, per_in, in_space = 1, 1, None
    return Segment(key, kind, shape, offset, n_in, per_in, in_space)


def make_group(name: str, space: str, parts: Sequence[tuple[str, str, tuple[int, ...], str | None]]) -> NodeGroup:
    """Group from ``(key, kind, shape, in_space)`` parts, laid out in the given order."""
    segments, offset = [], 0
    for key, kind, shape, in_space in parts:
        seg = _segment(key, kind, shape, offset, in_space)
        segments.append(seg)
        offset += seg.length
    n_nodes = out_size(segments[0])
    for seg in segments[1:]:
        if out_size(seg) != n_nodes:
            raise ValueError(
                f"layer {name!r}: {seg.key!r} has shape {seg.shape}, which does not give {n_nodes} output "
                f"channels like {segments[0].key!r} {segments[0].shape}"
            )
    return NodeGroup(name, n_nodes, space, tuple(segments))


def out_size(seg: Segment) -> int:
    return seg.shape[out_dim(seg)]


def out_dim(s: Segment) -> int:
    """Axis of a segment's per-expert tensor that indexes output channels (= nodes)."""
    return 1 if s.kind in (SPECTRAL, GATE) else 0


def in_dim(s: Segment) -> int:
    """Axis indexing input channels (weights only)."""
    return 0 if s.kind == SPECTRAL else 1


def encode_segment(t: torch.Tensor, s: Segment) -> torch.Tensor:
    """``[E, *s.shape]`` -> ``[E, n_out, s.length]``."""
    e = t.shape[0]
    if s.kind == SPECTRAL:  # [E, in, out, *m] -> [E, out, in, *m, 2]
        return torch.view_as_real(t.transpose(1, 2)).reshape(e, s.shape[1], s.length)
    return t.reshape(e, out_size(s), s.length)  # DENSE / GATE / BIAS are already output-major


def decode_segment(x: torch.Tensor, s: Segment) -> torch.Tensor:
    """``[E, n_out, s.length]`` -> ``[E, *s.shape]`` (contiguous): views, then one copy."""
    if s.kind == SPECTRAL:  # [E, out, in*m*2] -> [E, in, out, *m, 2] -> complex view
        ri = x.unflatten(-1, (s.shape[0], *s.shape[2:], 2)).transpose(1, 2)
        # A fresh buffer (storage offset 0) even where the transpose is trivial: view_as_complex needs it.
        return torch.view_as_complex(ri.clone(memory_format=torch.contiguous_format))
    if s.kind == DENSE:
        return x.unflatten(-1, s.shape[1:]).contiguous()
    return x.reshape(x.shape[0], *s.shape).contiguous()  # BIAS / GATE: n_out entries


def fno_groups(items: Mapping[str, torch.Tensor]) -> list[NodeGroup]:
    """The groups of a neuraloperator FNO's state dict (tensors only), in forward data-flow order."""
    shapes = {k: tuple(v.shape) for k, v in items.items()}
    used: set[str] = set()

    def take(key):
        used.add(key)
        return shapes[key]

    def mlp(prefix, in_space, out_space, merge=()):
        """ChannelMLP ``prefix.fcs.j``: one group per fc; ``merge`` parts join the last fc's nodes."""
        n = _count(shapes, prefix + ".fcs.{}.weight")
        if n == 0:
            raise ValueError(f"state_dict: no '{prefix}.fcs.0.weight' key; not a neuraloperator FNO layout")
        groups, space = [], in_space
        for j in range(n):
            name = f"{prefix}.fcs.{j}"
            last = j == n - 1
            parts = [(name + ".weight", DENSE, take(name + ".weight"), space)]
            if last:
                parts += list(merge)
            if name + ".bias" in shapes:
                parts.append((name + ".bias", BIAS, take(name + ".bias"), None))
            space = out_space if last else name
            groups.append(make_group(name, space, parts))
        return groups

    def skip(prefix):
        """A skip module's parts (appended where it merges): linear -> DENSE, soft-gating -> GATE."""
        if prefix + ".conv.weight" in shapes:
            return [(prefix + ".conv.weight", DENSE, take(prefix + ".conv.weight"), HIDDEN)]
        if prefix + ".weight" in shapes:
            return [(prefix + ".weight", GATE, take(prefix + ".weight"), HIDDEN)]
        return []  # identity or no skip: no weights

    groups = mlp("lifting", INPUT, HIDDEN)
    n_layers = _count(shapes, "fno_blocks.convs.{}.weight.tensor")
    if n_layers == 0:
        raise ValueError(
            "state_dict: no 'fno_blocks.convs.0.weight.tensor' key (dense SpectralConv weights expected; "
            "factorized weights are not supported)"
        )
    for layer in range(n_layers):
        name = f"fno_blocks.convs.{layer}"
        parts = [(name + ".weight.tensor", SPECTRAL, take(name + ".weight.tensor"), HIDDEN)]
        parts += skip(f"fno_blocks.fno_skips.{layer}")
        if name + ".bias" in shapes:
            parts.append((name + ".bias", BIAS, take(name + ".bias"), None))
        groups.append(make_group(name, HIDDEN, parts))
        if f"fno_blocks.channel_mlp.{layer}.fcs.0.weight" in shapes:
            merge = skip(f"fno_blocks.channel_mlp_skips.{layer}")
            groups += mlp(f"fno_blocks.channel_mlp.{layer}", HIDDEN, HIDDEN, merge)
    groups += mlp("projection", HIDDEN, "output")
    unused = [k for k in shapes if k not in used]
    if unused:
        raise ValueError(f"state_dict: key {unused[0]!r} {shapes[unused[0]]} has no place in the FNO weight graph")
    return groups


def plain_module_groups(module: nn.Module) -> list[NodeGroup]:
    """The groups of a plain net: one per Linear/ConvNd layer in registration order."""
    layers = []
    for name, sub in module.named_modules():
        own = list(sub.named_parameters(recurse=False))
        if not own:
            continue
        supported = isinstance(sub, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d))
        if not supported:
            raise TypeError(
                f"module: layer {name!r} is a {type(sub).__name__}; the weight graph supports neuraloperator "
                "FNO and plain nets of nn.Linear / nn.Conv1d/2d/3d layers"
            )
        if isinstance(sub, nn.modules.conv._ConvNd) and sub.groups != 1:
            raise ValueError(f"module: conv layer {name!r} has groups={sub.groups}; only groups=1 is supported")
        prefix = name + "." if name else ""
        shapes = {prefix + k: tuple(p.shape) for k, p in own}
        layers.append((name, prefix + "weight", prefix + "bias" if prefix + "bias" in shapes else None, shapes))
    if not layers:
        raise ValueError("module: has no parameters; nothing to encode")
    return _plain_groups(layers)


def plain_state_groups(items: Mapping[str, torch.Tensor]) -> list[NodeGroup]:
    """The groups of a plain net's state dict: ``<name>.weight`` (+ ``<name>.bias``) layers in dict order."""
    layers, seen = [], set()
    for key, t in items.items():
        if key in seen:
            continue
        if not key.endswith("weight") or t.dim() < 2:
            raise ValueError(
                f"state_dict: key {key!r} {tuple(t.shape)} is not a Linear/Conv weight ('<name>.weight' with "
                ">= 2 dims, optionally followed by '<name>.bias'); cannot infer a weight graph"
            )
        prefix = key[: -len("weight")]
        bias = prefix + "bias" if prefix + "bias" in items else None
        seen.update([key, bias])
        shapes = {key: tuple(t.shape)} | ({bias: tuple(items[bias].shape)} if bias else {})
        layers.append((prefix.rstrip("."), key, bias, shapes))
    if not layers:
        raise ValueError("state_dict: has no tensors; nothing to encode")
    return _plain_groups(layers)


def _plain_groups(layers) -> list[NodeGroup]:
    """Chain of layers: a layer reads the previous layer's space when its input size matches."""
    groups, space, width = [], INPUT, None
    for name, wkey, bkey, shapes in layers:
        w = shapes[wkey]
        in_space = space if w[1] == width else (INPUT if not groups else f"{name}.in")
        parts = [(wkey, DENSE, w, in_space)]
        if bkey is not None:
            parts.append((bkey, BIAS, shapes[bkey], None))
        group_name = name or "layer"
        groups.append(make_group(group_name, group_name, parts))
        space, width = group_name, w[0]
    return groups


def is_fno(module: nn.Module) -> bool:
    try:
        from neuralop.models import FNO
    except ImportError:  # pragma: no cover - neuraloperator is a dependency
        return False
    return isinstance(module, FNO)


def check_fno_supported(fno: nn.Module) -> None:
    """Options whose weights the graph does not cover (the paper's FNOs use none of them)."""
    blocks = fno.fno_blocks
    checks = [
        ("complex_data", getattr(fno, "complex_data", False), False),
        ("factorization", blocks.factorization, None),
        ("separable", blocks.separable, False),
        ("norm", blocks.norm is None, True),
    ]
    for name, seen, allowed in checks:
        if seen != allowed:
            shown = "set" if name == "norm" else seen
            raise ValueError(
                f"module: FNO with {name}={shown!r} is not supported by the weight graph "
                f"(supported: {name}={None if name == 'norm' else allowed!r})"
            )


def _count(shapes: Mapping[str, Any], pattern: str) -> int:
    n = 0
    while pattern.format(n) in shapes:
        n += 1
    return n
