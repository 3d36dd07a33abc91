"""Weight normalisation fitted on the zoo (paper sec. 3.1.1: "weights per input-output node pair, biases
per node"): z-scoring ``w_std = (w - mean) / std`` of every node-token entry, exactly invertible.

Statistics are taken across the experts of the zoo. Two granularities:

* ``"element"`` (default): one mean/std per scalar, i.e. per (input node, output node, kernel entry /
  Fourier mode, re|im) for weights and per node for biases and soft gates. This refines the paper's
  per-pair statistics, and it is what we recommend: a domain-adaptive zoo is finetuned from one base
  model, so each coordinate's zoo mean is (close to) its base weight and its std the environment-driven
  variation the generator has to learn. Some coordinates get no gradient at all (the imaginary part of
  the zero-frequency mode: the inverse rFFT discards it) and stay constant across the zoo.
* ``"pair"``: the paper's literal choice, one mean/std per (input node, output node) pair, pooled over
  its kernel entries / modes and (re, im); per node for biases and gates. Pooled over modes, a pair's
  std is dominated by the mode-to-mode spread of the shared base weights, not by the between-expert
  variation: on a 24-expert tiny zoo (hidden 16, modes 8x8) the spectral tokens' between-expert std
  came out at 0.036 under ``"pair"`` vs 1.0 under ``"element"`` (dense / bias segments: 1.0 under both),
  i.e. the official code's pitfall (ranges pooled over modes) in z-score form.

Why z-scores and not the official min-max scaling to [0, 1]: min-max over the zoo is set by its most
extreme expert, so the between-expert variation of typical experts ends up in a sliver of [0, 1]; a
z-score puts it at unit scale. Stds get a floor, ``max(min_std, rel_std_floor * median std of the
segment)`` per layer segment (weights / skip / bias of one layer), so coordinates that are (nearly)
constant across the zoo map to ~0 instead of amplifying float noise; any floor keeps the map invertible.

Fitting streams: ``fit`` accepts one ``NodeTokens`` or an iterable of chunks (a zoo larger than memory)
and merges per-chunk moments in float64 (Chan et al.'s parallel update). Stds are population stds
(ddof 0), so the fitted zoo normalises to exactly zero mean and unit std where no floor applies.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch

from dynadiff_fast.weightspace.graph import NodeTokens, WeightGraph
from dynadiff_fast.weightspace.layout import Segment

GRANULARITIES = ("element", "pair")


class WeightNormalizer:
    """Per-entry affine map of node tokens: ``normalize(t) = (t - mean) / std``, ``denormalize`` inverts it.

    ``mean[g]`` and ``std[g]`` are ``[n_nodes_g, feat_g]`` (float32), broadcast over experts; treat them as
    read-only (copies on the tokens' device/dtype are cached on first use). Build with ``fit`` or
    ``from_state_dict``; store with ``state_dict()`` (tensors only: ``mean.<g>``, ``std.<g>``).
    """

    def __init__(self, mean: list[torch.Tensor], std: list[torch.Tensor]):
        if len(mean) != len(std) or not mean:
            raise ValueError(f"mean/std: expected the same non-zero number of groups, got {len(mean)} and {len(std)}")
        for g, (m, s) in enumerate(zip(mean, std)):
            if m.dim() != 2 or m.shape != s.shape:
                shapes = f"{tuple(m.shape)} and {tuple(s.shape)}"
                raise ValueError(f"mean[{g}]/std[{g}]: expected equal [n_nodes, feat] shapes, got {shapes}")
            if not bool((s > 0).all()) or not bool(torch.isfinite(m).all()):
                raise ValueError(f"std[{g}]/mean[{g}]: stds must be > 0 and means finite")
        self.mean = list(mean)
        self.std = list(std)
        self._cast: dict[tuple[torch.device, torch.dtype], tuple[list, list]] = {}

    # -- fitting ----------------------------------------------------------------------------------

    @classmethod
    def fit(
        cls,
        tokens: NodeTokens | Iterable[NodeTokens],
        *,
        granularity: str = "element",
        rel_std_floor: float = 1e-2,
        min_std: float = 1e-8,
    ) -> WeightNormalizer:
        """Fit on zoo tokens (one ``NodeTokens`` or an iterable of chunks, >= 2 experts in total)."""
        if granularity not in GRANULARITIES:
            raise ValueError(f"granularity: expected one of {GRANULARITIES}, got {granularity!r}")
        if not rel_std_floor >= 0 or not min_std > 0:
            raise ValueError(f"rel_std_floor >= 0 and min_std > 0 required, got {rel_std_floor} and {min_std}")
        chunks = [tokens] if isinstance(tokens, NodeTokens) else tokens
        moments, layout = None, None
        for i, chunk in enumerate(chunks):
            if not isinstance(chunk, NodeTokens):
                raise TypeError(f"tokens[{i}]: expected NodeTokens, got {type(chunk).__name__}")
            if layout is None:
                layout = chunk.layout
            elif chunk.layout != layout:
                raise ValueError(f"tokens[{i}]: its weight graph differs from the first chunk's")
            batch = [_moments(t) for t in chunk.groups]
            moments = batch if moments is None else [_merge(a, b) for a, b in zip(moments, batch)]
        if moments is None:
            raise ValueError("tokens: no chunks given; nothing to fit")
        if moments[0][0] < 2:
            raise ValueError(f"tokens: need at least 2 experts to fit a normaliser, got {int(moments[0][0])}")

        means, stds = [], []
        for group, (n, mean, m2) in zip(layout.groups, moments):
            if granularity == "pair":
                mean, m2 = _pool_pairs(group.segments, n, mean, m2)
            std = (m2 / n).sqrt()
            for seg in group.segments:  # floor per layer segment (weights / skip / bias)
                part = std[:, seg.offset : seg.offset + seg.length]
                part.clamp_(min=max(min_std, rel_std_floor * part.median().item()))
            means.append(mean.float())
            stds.append(std.float())
        return cls(means, stds)

    # -- the map ----------------------------------------------------------------------------------

    def normalize(self, tokens: NodeTokens) -> NodeTokens:
        """``(t - mean) / std`` per entry; differentiable in ``tokens``."""
        groups = self._check(tokens)
        mean, std = self._stats_like(groups[0])
        return NodeTokens([(t - m) / s for t, m, s in zip(groups, mean, std)], tokens.layout)

    def denormalize(self, tokens: NodeTokens) -> NodeTokens:
        """``t * std + mean`` per entry (inverse of ``normalize``); differentiable in ``tokens``."""
        groups = self._check(tokens)
        mean, std = self._stats_like(groups[0])
        return NodeTokens([torch.addcmul(m, t, s) for t, m, s in zip(groups, mean, std)], tokens.layout)

    def _stats_like(self, t: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Statistics on ``t``'s device and dtype, cast once and cached (no per-step host->device copy)."""
        key = (t.device, t.dtype)
        if key not in self._cast:
            self._cast[key] = ([m.to(t) for m in self.mean], [s.to(t) for s in self.std])
        return self._cast[key]

    def _check(self, tokens: NodeTokens) -> list[torch.Tensor]:
        if not isinstance(tokens, NodeTokens):
            raise TypeError(f"tokens: expected NodeTokens, got {type(tokens).__name__}")
        if len(tokens.groups) != len(self.mean):
            raise ValueError(f"tokens: {len(tokens.groups)} groups, the normaliser was fitted on {len(self.mean)}")
        for g, (t, m) in enumerate(zip(tokens.groups, self.mean)):
            if t.dim() != 3 or t.shape[1:] != m.shape:
                raise ValueError(
                    f"tokens.groups[{g}]: expected shape [E, {m.shape[0]}, {m.shape[1]}] (the fitted layout), "
                    f"got {tuple(t.shape)}"
                )
        return list(tokens.groups)

    # -- storage ----------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {**{f"mean.{g}": m for g, m in enumerate(self.mean)}, **{f"std.{g}": s for g, s in enumerate(self.std)}}

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        loaded = self.from_state_dict(state)
        self.mean, self.std, self._cast = loaded.mean, loaded.std, {}

    @classmethod
    def from_state_dict(cls, state: Mapping[str, torch.Tensor]) -> WeightNormalizer:
        n = sum(1 for k in state if k.startswith("mean."))
        expected = {f"{kind}.{g}" for kind in ("mean", "std") for g in range(n)}
        if set(state) != expected:
            odd = sorted(set(state) ^ expected)
            raise ValueError(f"state: not a WeightNormalizer state dict (unexpected or missing keys {odd[:4]})")
        return cls([state[f"mean.{g}"] for g in range(n)], [state[f"std.{g}"] for g in range(n)])

    def to(self, *args, **kwargs) -> WeightNormalizer:
        """Move the statistics (e.g. to the training device once, instead of per call)."""
        return WeightNormalizer([m.to(*args, **kwargs) for m in self.mean], [s.to(*args, **kwargs) for s in self.std])

    def matches(self, graph: WeightGraph) -> bool:
        """Whether the statistics have ``graph``'s group shapes."""
        shapes = [tuple(m.shape) for m in self.mean]
        return shapes == [(g.n_nodes, g.feature_length) for g in graph.groups]


# ----------------------------------------------------------------------------------------------------
# Moments (float64): (count, mean [n, f], M2 [n, f]) with M2 = sum of squared deviations
# ----------------------------------------------------------------------------------------------------


def _moments(t: torch.Tensor) -> tuple[float, torch.Tensor, torch.Tensor]:
    n = t.shape[0]
    var, mean = torch.var_mean(t.detach().to(torch.float64), dim=0, correction=0)
    return float(n), mean, var * n


def _merge(a, b):
    """Chan et al.'s pairwise update of (count, mean, M2)."""
    (na, ma, m2a), (nb, mb, m2b) = a, b
    n = na + nb
    delta = mb - ma.to(mb.device)
    return n, ma.to(mb.device) + delta * (nb / n), m2a.to(mb.device) + m2b + delta.square() * (na * nb / n)


def _pool_pairs(segments: tuple[Segment, ...], n: float, mean: torch.Tensor, m2: torch.Tensor):
    """Per-element moments -> per-(out node, in node) moments of every weight segment, pooled over its
    ``per_in`` entries (equal counts: pooled mean = mean of means, M2 adds the spread of the means),
    broadcast back to the element layout. Bias / gate entries are per node already."""
    mean, m2 = mean.clone(), m2.clone()
    for seg in segments:
        if not seg.is_weight or seg.per_in == 1:
            continue
        sl = slice(seg.offset, seg.offset + seg.length)
        mu = mean[:, sl].reshape(-1, seg.n_in, seg.per_in)
        sq = m2[:, sl].reshape(-1, seg.n_in, seg.per_in)
        pair_mean = mu.mean(-1, keepdim=True)
        pair_m2 = (sq.sum(-1, keepdim=True) + n * (mu - pair_mean).square().sum(-1, keepdim=True)) / seg.per_in
        # Stored per element with the pooled count n * per_in folded in: var = pair_m2 / n.
        mean[:, sl] = pair_mean.expand_as(mu).reshape(mean[:, sl].shape)
        m2[:, sl] = pair_m2.expand_as(sq).reshape(m2[:, sl].shape)
    return mean, m2
