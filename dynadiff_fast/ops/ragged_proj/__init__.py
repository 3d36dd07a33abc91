"""Ragged per-group linear projection of weight-graph node features, without padding.

A weight graph's nodes come in groups (one per layer); the nodes of group g all have f_g features and
f_g ranges from a handful (lifting layer) to thousands (spectral convolutions). The weight VAE maps
every node to a common width D with its group's own matrix (paper sec. 3.1.2, "layer-wise linear
mapping") and back. Padding every node to max f_g would multiply memory and FLOPs by up to
max f / mean f, so these ops read the packed layout directly (see ``reference.py`` for the math):

    y = ragged_proj(values, weight, node_offset, group_nodes, group_feats, bias)      [E, F] -> [E, N, D]
    v = ragged_unproj(h, weight, node_offset, group_nodes, group_feats, F, bias)      [E, N, D] -> [E, F]

``weight`` [sum f_g, D] stacks the groups' matrices along the feature axis. Both are differentiable
(custom ops with autograd; their backward is the other op plus ``ragged_wgrad``). ``RaggedLayout``
holds the index data of a contiguous layout and packs / unpacks per-group tensors.

backend: ``"auto"`` (triton on CUDA, torch on CPU), ``"torch"``, ``"triton"``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from dynadiff_fast import _backend
from dynadiff_fast._tensor import as_tensor, check_tensor
from dynadiff_fast.profiling import nvtx_range

_FLOATS = (torch.float32, torch.float64, torch.float16, torch.bfloat16)

OP = _backend.hot_op("ragged_proj", __name__, ("torch", "triton"))
UNPROJ_OP = _backend.hot_op("ragged_unproj", __name__, ("torch", "triton"))
WGRAD_OP = _backend.hot_op("ragged_wgrad", __name__, ("torch", "triton"))


# --- custom ops ---------------------------------------------------------------------------------


@torch.library.custom_op("dynadiff::ragged_proj", mutates_args=())
def _proj_op(
    values: torch.Tensor,
    weight: torch.Tensor,
    node_offset: torch.Tensor,
    group_nodes: list[int],
    group_feats: list[int],
    bias: torch.Tensor | None,
    backend: str,
) -> torch.Tensor:
    with nvtx_range("kernel/ragged_proj"):
        impl = OP.impl(backend, values.device.type)
        return impl(values, weight, node_offset, group_nodes, group_feats, bias)


@torch.library.custom_op("dynadiff::ragged_unproj", mutates_args=())
def _unproj_op(
    h: torch.Tensor,
    weight: torch.Tensor,
    node_offset: torch.Tensor,
    group_nodes: list[int],
    group_feats: list[int],
    num_values: int,
    bias: torch.Tensor | None,
    backend: str,
) -> torch.Tensor:
    with nvtx_range("kernel/ragged_unproj"):
        impl = UNPROJ_OP.impl(backend, h.device.type)
        return impl(h, weight, node_offset, group_nodes, group_feats, num_values, bias)


@torch.library.custom_op("dynadiff::ragged_wgrad", mutates_args=())
def _wgrad_op(
    values: torch.Tensor,
    dy: torch.Tensor,
    node_offset: torch.Tensor,
    group_nodes: list[int],
    group_feats: list[int],
    backend: str,
) -> torch.Tensor:
    with nvtx_range("kernel/ragged_wgrad"):
        return WGRAD_OP.impl(backend, values.device.type)(values, dy, node_offset, group_nodes, group_feats)


@_proj_op.register_fake
def _(values, weight, node_offset, group_nodes, group_feats, bias, backend):
    return values.new_empty(values.shape[0], group_nodes[-1], weight.shape[1])


@_unproj_op.register_fake
def _(h, weight, node_offset, group_nodes, group_feats, num_values, bias, backend):
    return h.new_empty(h.shape[0], num_values)


@_wgrad_op.register_fake
def _(values, dy, node_offset, group_nodes, group_feats, backend):
    return values.new_empty(group_feats[-1], dy.shape[2])


def _proj_setup(ctx, inputs, output):
    values, weight, node_offset, group_nodes, group_feats, bias, backend = inputs
    ctx.save_for_backward(values, weight, node_offset)
    ctx.layout = (group_nodes, group_feats, backend, bias is not None)


def _proj_backward(ctx, dy):
    values, weight, node_offset = ctx.saved_tensors
    group_nodes, group_feats, backend, has_bias = ctx.layout
    dy = dy.contiguous()
    need = ctx.needs_input_grad
    dvalues = dweight = dbias = None
    if need[0]:  # d values = dy W_g^T scattered back to the nodes' spans: the unproj op
        dvalues = _unproj_op(dy, weight, node_offset, group_nodes, group_feats, values.shape[1], None, backend)
    if need[1]:
        dweight = _wgrad_op(values, dy, node_offset, group_nodes, group_feats, backend)
    if has_bias and need[5]:
        dbias = dy.sum(0)
    return dvalues, dweight, None, None, None, dbias, None


def _unproj_setup(ctx, inputs, output):
    h, weight, node_offset, group_nodes, group_feats, num_values, bias, backend = inputs
    ctx.save_for_backward(h, weight, node_offset)
    ctx.layout = (group_nodes, group_feats, backend, bias is not None)


def _unproj_backward(ctx, dout):
    h, weight, node_offset = ctx.saved_tensors
    group_nodes, group_feats, backend, has_bias = ctx.layout
    dout = dout.contiguous()
    need = ctx.needs_input_grad
    dh = dweight = dbias = None
    if need[0]:  # d h = (node spans of dout) W_g: the proj op
        dh = _proj_op(dout, weight, node_offset, group_nodes, group_feats, None, backend)
    if need[1]:
        dweight = _wgrad_op(dout, h, node_offset, group_nodes, group_feats, backend)
    if has_bias and need[6]:  # sum of dout over the nodes of each group = wgrad against ones
        ones = h.new_ones(h.shape[0], h.shape[1], 1)
        dbias = _wgrad_op(dout, ones, node_offset, group_nodes, group_feats, backend)[:, 0]
    return dh, dweight, None, None, None, None, dbias, None


_proj_op.register_autograd(_proj_backward, setup_context=_proj_setup)
_unproj_op.register_autograd(_unproj_backward, setup_context=_unproj_setup)


# --- validation and public functions ------------------------------------------------------------


def _check_layout(node_offset, group_nodes, group_feats, num_values: int, device) -> tuple[list[int], list[int]]:
    gn, gf = [int(v) for v in group_nodes], [int(v) for v in group_feats]
    if len(gn) != len(gf) or len(gn) < 2:
        raise ValueError(
            f"group_nodes/group_feats: expected two cumulative lists of equal length G+1 >= 2, got lengths {len(gn)} and {len(gf)}"
        )
    for name, cum in (("group_nodes", gn), ("group_feats", gf)):
        if cum[0] != 0 or any(b < a for a, b in zip(cum, cum[1:])):
            raise ValueError(f"{name}: expected a non-decreasing cumulative list starting at 0, got {cum[:8]}...")
    check_tensor(node_offset, "node_offset", dtypes=(torch.int64,), ndim=1, device=device)
    if node_offset.shape[0] != gn[-1]:
        raise ValueError(f"node_offset: expected {gn[-1]} entries (group_nodes[-1]), got {node_offset.shape[0]}")
    if gn[-1]:
        lengths = torch.repeat_interleave(
            torch.tensor([b - a for a, b in zip(gf, gf[1:])], device=device),
            torch.tensor([b - a for a, b in zip(gn, gn[1:])], device=device),
        )
        lo, hi = int(node_offset.min()), int((node_offset + lengths).max())
        if lo < 0 or hi > num_values:
            raise ValueError(f"node_offset: node spans reach [{lo}, {hi}) but rows hold {num_values} values")
    return gn, gf


def _check_float(t, name: str, ndim: int, like: torch.Tensor | None = None) -> torch.Tensor:
    t = check_tensor(as_tensor(t, name), name, dtypes=_FLOATS, ndim=ndim)
    if like is not None and (t.dtype != like.dtype or t.device != like.device):
        raise TypeError(
            f"{name}: expected {like.dtype} on {like.device} like the first input, got {t.dtype} on {t.device}"
        )
    return t


def _check_backend(op: _backend.HotOp, backend: str, t: torch.Tensor) -> None:
    if op.resolve(backend, t.device.type) == "triton" and t.dtype != torch.float32:
        raise TypeError(
            f"{op.name}: the triton backend takes float32 tensors, got {str(t.dtype).removeprefix('torch.')}"
        )


def ragged_proj(
    values,
    weight,
    node_offset: torch.Tensor,
    group_nodes: Sequence[int],
    group_feats: Sequence[int],
    bias=None,
    *,
    backend: str = "auto",
) -> torch.Tensor:
    """y[e, n] = values[e, off_n : off_n + f_g] @ weight[group_feats[g] : group_feats[g+1]] (+ bias[n]).

    Args:
        values: [E, F] packed node features of E experts.
        weight: [group_feats[-1], D] the groups' [f_g, D] matrices stacked.
        node_offset: [N] int64 start of each node's features in a row of ``values``.
        group_nodes, group_feats: (G+1,) cumulative node counts / feature lengths of the groups.
        bias: [N, D] per-node bias (per-group bias + node embedding) or None.
    Returns:
        [E, N, D].
    """
    values = _check_float(values, "values", 2)
    weight = _check_float(weight, "weight", 2, values)
    gn, gf = _check_layout(node_offset, group_nodes, group_feats, values.shape[1], values.device)
    if weight.shape[0] != gf[-1]:
        raise ValueError(f"weight: expected {gf[-1]} rows (group_feats[-1]), got shape {tuple(weight.shape)}")
    if bias is not None:
        bias = _check_float(bias, "bias", 2, values)
        if tuple(bias.shape) != (gn[-1], weight.shape[1]):
            raise ValueError(f"bias: expected shape {(gn[-1], weight.shape[1])}, got {tuple(bias.shape)}")
    _check_backend(OP, backend, values)  # a clear error before entering the custom op
    return _proj_op(values, weight, node_offset.contiguous(), gn, gf, bias, backend)


def ragged_unproj(
    h,
    weight,
    node_offset: torch.Tensor,
    group_nodes: Sequence[int],
    group_feats: Sequence[int],
    num_values: int,
    bias=None,
    *,
    backend: str = "auto",
) -> torch.Tensor:
    """out[e, off_n : off_n + f_g] = h[e, n] @ weight[group_feats[g] : group_feats[g+1]]^T (+ bias[those rows]).

    Args:
        h: [E, N, D] node states.
        weight: [group_feats[-1], D]; bias: [group_feats[-1]] per group feature, or None.
        num_values: F, the packed row length (positions no node covers are 0).
    Returns:
        [E, num_values].
    """
    h = _check_float(h, "h", 3)
    weight = _check_float(weight, "weight", 2, h)
    if not isinstance(num_values, int) or num_values < 0:
        raise ValueError(f"num_values: expected an int >= 0, got {num_values!r}")
    gn, gf = _check_layout(node_offset, group_nodes, group_feats, num_values, h.device)
    if h.shape[1] != gn[-1] or weight.shape != (gf[-1], h.shape[2]):
        raise ValueError(
            f"h/weight: expected h [E, {gn[-1]}, D] and weight [{gf[-1]}, D], got {tuple(h.shape)} and {tuple(weight.shape)}"
        )
    if bias is not None:
        bias = _check_float(bias, "bias", 1, h)
        if bias.shape[0] != gf[-1]:
            raise ValueError(f"bias: expected shape ({gf[-1]},), got {tuple(bias.shape)}")
    _check_backend(UNPROJ_OP, backend, h)
    return _unproj_op(h, weight, node_offset.contiguous(), gn, gf, num_values, bias, backend)


@dataclass(frozen=True, eq=False)
class RaggedLayout:
    """Index data of G groups of nodes packed back to back: group g holds n_g nodes of f_g features,
    so an expert's row is ``cat([group_g.reshape(n_g * f_g) for g])``."""

    group_nodes: tuple[int, ...]
    group_feats: tuple[int, ...]
    node_offset: torch.Tensor  # [N] int64

    @classmethod
    def from_group_sizes(cls, sizes: Sequence[tuple[int, int]], device=None) -> RaggedLayout:
        """``sizes``: [(n_g, f_g)] per group, in order."""
        if not sizes or any(n < 0 or f < 0 for n, f in sizes):
            raise ValueError(f"sizes: expected a non-empty list of (n_nodes >= 0, n_feats >= 0), got {list(sizes)[:8]}")
        gn, gf, offsets, pos = [0], [0], [], 0
        for n, f in sizes:
            gn.append(gn[-1] + n)
            gf.append(gf[-1] + f)
            offsets += [pos + i * f for i in range(n)]
            pos += n * f
        return cls(tuple(gn), tuple(gf), torch.tensor(offsets, dtype=torch.int64, device=device))

    @property
    def sizes(self) -> list[tuple[int, int]]:
        return [
            (b - a, d - c)
            for a, b, c, d in zip(self.group_nodes, self.group_nodes[1:], self.group_feats, self.group_feats[1:])
        ]

    @property
    def num_nodes(self) -> int:
        return self.group_nodes[-1]

    @property
    def num_values(self) -> int:
        return sum(n * f for n, f in self.sizes)

    @property
    def node_group(self) -> torch.Tensor:
        """[N] int64 group id of every node."""
        counts = torch.tensor([n for n, _ in self.sizes], device=self.node_offset.device)
        return torch.repeat_interleave(torch.arange(len(counts), device=counts.device), counts)

    def to(self, device) -> RaggedLayout:
        return RaggedLayout(self.group_nodes, self.group_feats, self.node_offset.to(device))

    def pack(self, groups: Sequence[torch.Tensor]) -> torch.Tensor:
        """list of [E, n_g, f_g] -> [E, F]."""
        if len(groups) != len(self.sizes):
            raise ValueError(f"groups: expected {len(self.sizes)} tensors, got {len(groups)}")
        for g, (t, (n, f)) in enumerate(zip(groups, self.sizes)):
            if t.dim() != 3 or tuple(t.shape[1:]) != (n, f):
                raise ValueError(f"groups[{g}]: expected shape [E, {n}, {f}], got {tuple(t.shape)}")
        return torch.cat([t.reshape(t.shape[0], -1) for t in groups], dim=1)

    def unpack(self, values: torch.Tensor) -> list[torch.Tensor]:
        """[E, F] -> list of [E, n_g, f_g] views."""
        parts = torch.split(values, [n * f for n, f in self.sizes], dim=1)
        return [p.view(values.shape[0], n, f) for p, (n, f) in zip(parts, self.sizes)]

    def proj(self, values, weight, bias=None, *, backend: str = "auto") -> torch.Tensor:
        return ragged_proj(values, weight, self.node_offset, self.group_nodes, self.group_feats, bias, backend=backend)

    def unproj(self, h, weight, bias=None, *, backend: str = "auto") -> torch.Tensor:
        return ragged_unproj(
            h, weight, self.node_offset, self.group_nodes, self.group_feats, self.num_values, bias, backend=backend
        )
