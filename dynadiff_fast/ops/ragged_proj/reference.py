"""Plain-torch ragged per-group projection: the truth the Triton kernels are tested against.

Layout (one expert per row of ``values``; every expert shares it):
    values [E, F]          node features packed back to back (the weight graph's node tokens)
    node_offset [N] int64  where node n's features start in a row of ``values``
    group_nodes (G+1,)     nodes of group g are n in [group_nodes[g], group_nodes[g+1])
    group_feats (G+1,)     group g's nodes have f_g = group_feats[g+1] - group_feats[g] features and its
                           weight is ``weight[group_feats[g]:group_feats[g+1]]`` ([f_g, D])

    ragged_proj:    y[e, n] = x_n(e) @ W_g + bias[n]                 x_n(e) = values[e, off_n : off_n + f_g]
    ragged_unproj:  values[e, off_n : off_n + f_g] = h[e, n] @ W_g^T + bias[g]
    ragged_wgrad:   dW_g = sum_{e, n in g} x_n(e)^T dy[e, n]      (the weight gradient of both)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def group_index(node_offset: torch.Tensor, group_nodes: Sequence[int], group_feats: Sequence[int], g: int):
    """[n_g, f_g] positions in a row of ``values`` of group g's node features."""
    n0, n1 = group_nodes[g], group_nodes[g + 1]
    f = group_feats[g + 1] - group_feats[g]
    return node_offset[n0:n1, None] + torch.arange(f, device=node_offset.device)


def ragged_proj(values, weight, node_offset, group_nodes, group_feats, bias=None):
    """[E, F] packed node features -> [E, N, D]: each group's nodes times that group's weight [f_g, D]."""
    ys = []
    for g in range(len(group_nodes) - 1):
        x = values[:, group_index(node_offset, group_nodes, group_feats, g)]  # [E, n_g, f_g]
        ys.append(x @ weight[group_feats[g] : group_feats[g + 1]])
    y = torch.cat(ys, dim=1)
    return y if bias is None else y + bias


def ragged_unproj(h, weight, node_offset, group_nodes, group_feats, num_values: int, bias=None):
    """[E, N, D] -> [E, num_values] packed node features: node n of group g gets h[:, n] @ W_g^T (+ bias[f0:f1]).
    Positions no node covers stay 0."""
    idx, ys = [], []
    for g in range(len(group_nodes) - 1):
        f0, f1 = group_feats[g], group_feats[g + 1]
        y = h[:, group_nodes[g] : group_nodes[g + 1]] @ weight[f0:f1].T  # [E, n_g, f_g]
        ys.append((y if bias is None else y + bias[f0:f1]).flatten(1))
        idx.append(group_index(node_offset, group_nodes, group_feats, g).flatten())
    out = h.new_zeros(h.shape[0], num_values)
    return out.index_copy(1, torch.cat(idx), torch.cat(ys, dim=1))


def ragged_wgrad(values, dy, node_offset, group_nodes, group_feats):
    """dW [group_feats[-1], D] = per group sum_{e, n in g} x_n(e)^T dy[e, n]."""
    parts = []
    for g in range(len(group_nodes) - 1):
        x = values[:, group_index(node_offset, group_nodes, group_feats, g)]  # [E, n_g, f_g]
        parts.append(torch.einsum("enf,end->fd", x, dy[:, group_nodes[g] : group_nodes[g + 1]]))
    return torch.cat(parts, dim=0)
