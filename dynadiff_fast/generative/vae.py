"""The weight VAE (paper sec. 3.1.2, App. D): node tokens of an expert <-> a latent per weight-graph node.

    encoder  x_n  --(layer-wise linear W_g, + node embedding)-->  h_n in R^D      (ragged_proj, no padding)
             h    --(n_layers pre-LN blocks: node attention over all N nodes + MLP)-->  LN  --> (mu_n, logvar_n)
    decoder  z_n  --(linear + node embedding)--> n_layers blocks --> LN --(layer-wise linear W'_g)--> x̂_n

Every node of an expert attends to every other node, within and across layers. Node n's features x_n
(the weights into one output channel, ``WeightGraph``) have the length f_g of its layer g; the layer-wise
maps ``W_g: R^{f_g} -> R^D`` and ``W'_g: R^D -> R^{f_g}`` are stored stacked as ``[sum_g f_g, D]`` and run by
``ops.ragged_proj`` straight from the packed layout. The learned node embedding ``[N, D]`` is the sum of the
per-layer bias, a layer embedding and a position-in-layer embedding, folded into one table because all three
are added to the same vector. With the paper sizes (D = 1024, latent 512, 8 heads, 4 blocks each side) this is
193M parameters on the NS FNO, as App. D reports: the latent is one ``latent_dim`` vector per node,
``latent_shape = (num_nodes, latent_dim)``, the token sequence the DiT denoises.

The VAE works on *normalised* node tokens (``WeightNormalizer``, fitted on the zoo and stored beside it):
``encode(normalizer.normalize(tokens))``, ``normalizer.denormalize(decode(z))``.

Loss (eq. 3 + eq. 4): ``L = recon + beta * KL + lambda * L_func`` with
    recon  = mean over all scalars of (x̂ - x)^2                              (normalised tokens)
    KL     = mean over latent entries of 0.5 (mu^2 + e^logvar - 1 - logvar)
    L_func = mean over sampled frames of ||f_ŵ(x_i) - f_w(x_i)||^2               (decoded vs original expert)
where f_ŵ runs the decoded weights (``WeightGraph.decode_stacked`` -> ``BatchedFNO.from_stacked`` or
``BatchedMLP.from_stacked``, so the
gradient flows through the expert's forward pass back into the decoder).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dynadiff_fast.ops.node_attention import node_attention
from dynadiff_fast.ops.ragged_proj import RaggedLayout, ragged_proj, ragged_unproj
from dynadiff_fast.profiling import nvtx_range
from dynadiff_fast.weightspace.graph import NodeTokens, WeightGraph

# -------------------------------------------------------------------------------------------------
# Config
# -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VAEConfig:
    """Weight-VAE architecture (App. D names in brackets).

    Args:
        d_model: common internal width D [internal_dim].
        latent_dim: latent size per node [latent_dim].
        n_heads: attention heads [num_heads].
        n_layers: attention blocks in the encoder, and again in the decoder [num_attn_layers].
        mlp_ratio: hidden width of each block's MLP as a multiple of d_model.
        backend: ``ops.ragged_proj`` / ``ops.node_attention`` backend ("auto": triton on CUDA, torch on CPU).
    """

    d_model: int = 1024
    latent_dim: int = 512
    n_heads: int = 8
    n_layers: int = 4
    mlp_ratio: int = 4
    backend: str = "auto"

    def __post_init__(self) -> None:
        for name in ("d_model", "latent_dim", "n_heads", "mlp_ratio"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: expected >= 1, got {getattr(self, name)}")
        if self.n_layers < 0:
            raise ValueError(f"n_layers: expected >= 0, got {self.n_layers}")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model: {self.d_model} is not divisible by n_heads={self.n_heads}")


# tiny/bench: one CPU core, minutes; small: a GPU workstation; paper: App. D.
VAE_PRESETS: dict[str, VAEConfig] = {
    "tiny": VAEConfig(d_model=64, latent_dim=16, n_heads=4, n_layers=2, mlp_ratio=2),
    "bench": VAEConfig(d_model=64, latent_dim=16, n_heads=4, n_layers=2, mlp_ratio=2),
    "small": VAEConfig(d_model=256, latent_dim=64, n_heads=8, n_layers=3),
    "paper": VAEConfig(),
}


# -------------------------------------------------------------------------------------------------
# Model
# -------------------------------------------------------------------------------------------------


class NodeSelfAttention(nn.Module):
    """Multi-head self-attention over the N nodes of each expert: x [E, N, D] -> [E, N, D]."""

    def __init__(self, d_model: int, n_heads: int, backend: str):
        super().__init__()
        self.n_heads, self.backend = n_heads, backend
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        E, N, D = x.shape
        qkv = self.qkv(x).view(E, N, 3, self.n_heads, D // self.n_heads)
        q, k, v = (qkv[:, :, i].transpose(1, 2) for i in range(3))  # [E, H, N, dh] views
        o = node_attention(q, k, v, backend=self.backend)
        return self.proj(o.transpose(1, 2).reshape(E, N, D))


class Block(nn.Module):
    """Pre-LN transformer block: x + attn(LN x), then x + MLP(LN x)."""

    def __init__(self, d_model: int, n_heads: int, mlp_ratio: int, backend: str):
        super().__init__()
        self.norm1 = nn.LayerNorm(d_model)
        self.attn = NodeSelfAttention(d_model, n_heads, backend)
        self.norm2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(
            nn.Linear(d_model, mlp_ratio * d_model), nn.GELU(), nn.Linear(mlp_ratio * d_model, d_model)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class WeightVAE(nn.Module):
    """Node-attention VAE over the weight graph ``graph`` (see the module docstring).

    encode(tokens) -> (mu, logvar) [E, N, latent_dim];  decode(z [E, N, latent_dim]) -> NodeTokens;
    forward(tokens) -> (reconstruction, mu, logvar), sampling z = mu + e^(logvar/2) eps.
    """

    def __init__(self, config: VAEConfig, graph: WeightGraph):
        super().__init__()
        if not isinstance(config, VAEConfig):
            raise TypeError(f"config: expected a VAEConfig, got {type(config).__name__}")
        if not isinstance(graph, WeightGraph):
            raise TypeError(f"graph: expected a WeightGraph, got {type(graph).__name__}")
        self.config, self.graph = config, graph
        layout = RaggedLayout.from_group_sizes(list(zip(graph.group_sizes, graph.feature_lengths)))
        self.group_nodes, self.group_feats = list(layout.group_nodes), list(layout.group_feats)
        self.num_values = layout.num_values
        self.register_buffer("node_offset", layout.node_offset, persistent=False)
        N, K, D, c = graph.num_nodes, layout.group_feats[-1], config.d_model, config
        self.in_weight = nn.Parameter(torch.empty(K, D))  # W_g stacked: rows group_feats[g] : group_feats[g+1]
        self.in_embed = nn.Parameter(torch.empty(N, D))
        self.encoder = nn.ModuleList(Block(D, c.n_heads, c.mlp_ratio, c.backend) for _ in range(c.n_layers))
        self.enc_norm = nn.LayerNorm(D)
        self.to_moments = nn.Linear(D, 2 * c.latent_dim)
        self.from_latent = nn.Linear(c.latent_dim, D)
        self.out_embed = nn.Parameter(torch.empty(N, D))
        self.decoder = nn.ModuleList(Block(D, c.n_heads, c.mlp_ratio, c.backend) for _ in range(c.n_layers))
        self.dec_norm = nn.LayerNorm(D)
        self.out_weight = nn.Parameter(torch.empty(K, D))  # W'_g^T stacked the same way
        self.out_bias = nn.Parameter(torch.zeros(K))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        # nn.Linear's fan-in scaling per layer-wise map: W_g has fan-in f_g, W'_g fan-in D.
        for g in range(len(self.group_feats) - 1):
            rows = slice(self.group_feats[g], self.group_feats[g + 1])
            fan_in = max(self.group_feats[g + 1] - self.group_feats[g], 1)
            self.in_weight[rows].normal_(0.0, fan_in**-0.5)
        self.out_weight.normal_(0.0, self.config.d_model**-0.5)
        nn.init.normal_(self.in_embed, std=0.02)
        nn.init.normal_(self.out_embed, std=0.02)

    @property
    def latent_shape(self) -> tuple[int, int]:
        """(L, d) = (num_nodes, latent_dim): the DiT's token grid."""
        return (self.graph.num_nodes, self.config.latent_dim)

    def encode(self, tokens: NodeTokens) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised tokens of E experts -> (mu, logvar), each [E, N, latent_dim]."""
        if not isinstance(tokens, NodeTokens):
            raise TypeError(f"tokens: expected NodeTokens, got {type(tokens).__name__}")
        groups = self.graph.check_groups(list(tokens.groups), "tokens")
        with nvtx_range("vae/encode"):
            values = torch.cat([t.reshape(t.shape[0], -1) for t in groups], dim=1).to(self.in_weight.dtype)
            h = ragged_proj(values, self.in_weight, self.node_offset, self.group_nodes, self.group_feats,
                            self.in_embed, backend=self.config.backend)  # fmt: skip
            for block in self.encoder:
                h = block(h)
            mu, logvar = self.to_moments(self.enc_norm(h)).chunk(2, dim=-1)
        return mu, logvar.clamp(-30.0, 20.0)  # keep e^logvar finite in fp32

    def decode(self, z: torch.Tensor) -> NodeTokens:
        """Latents [E, N, latent_dim] -> normalised NodeTokens of E experts."""
        if z.dim() != 3 or tuple(z.shape[1:]) != self.latent_shape:
            raise ValueError(
                f"z: expected shape [E, {self.latent_shape[0]}, {self.latent_shape[1]}], got {tuple(z.shape)}"
            )
        with nvtx_range("vae/decode"):
            h = self.from_latent(z) + self.out_embed
            for block in self.decoder:
                h = block(h)
            values = ragged_unproj(self.dec_norm(h), self.out_weight, self.node_offset, self.group_nodes,
                                   self.group_feats, self.num_values, self.out_bias, backend=self.config.backend)  # fmt: skip
        return NodeTokens.from_packed(values, self.graph)

    def forward(
        self, tokens: NodeTokens, *, sample: bool = True, generator: torch.Generator | None = None
    ) -> tuple[NodeTokens, torch.Tensor, torch.Tensor]:
        """(reconstruction, mu, logvar); z = mu + exp(logvar / 2) * eps when ``sample`` else mu."""
        mu, logvar = self.encode(tokens)
        z = mu
        if sample:
            eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
            z = mu + torch.exp(0.5 * logvar) * eps
        return self.decode(z), mu, logvar


# -------------------------------------------------------------------------------------------------
# Loss terms
# -------------------------------------------------------------------------------------------------


def _packed(tokens: NodeTokens) -> torch.Tensor:
    return torch.cat([t.reshape(t.shape[0], -1) for t in tokens.groups], dim=1)


def reconstruction_loss(recon: NodeTokens, target: NodeTokens) -> torch.Tensor:
    """Mean squared error over every scalar of the (normalised) node tokens."""
    return F.mse_loss(_packed(recon), _packed(target).to(recon.dtype))


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL[N(mu, e^logvar) || N(0, 1)], averaged over latent entries (and experts)."""
    return 0.5 * (mu.square() + logvar.exp() - 1.0 - logvar).mean()


def expert_outputs(expert_config: Any, stacked: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Run E experts given as stacked weights ``{key: [E, ...]}`` on their inputs ``x [E, B, *frame]``
    -> ``[E, B, *out]``, differentiably in the weights: one step of the experts' container (``BatchedFNO``;
    ``BatchedMLP``: one RK4 step of the MLP vector field)."""
    from dynadiff_fast.experts.stacked import experts_type

    return experts_type(expert_config).from_stacked(expert_config, stacked)(x)


def functional_loss(decoded: NodeTokens, expert_config: Any, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Eq. (4): mean of (f_ŵ(x) - f_w(x))^2 over experts, frames and output entries.

    Args:
        decoded: the decoded experts' tokens, *denormalised* (real weights).
        expert_config: their architecture (``ExpertConfig``).
        x: [E, B, *frame] input frames per expert; target: [E, B, *out] the original experts' outputs f_w(x).
    """
    stacked = decoded.layout.decode_stacked(decoded)
    return F.mse_loss(expert_outputs(expert_config, stacked, x), target)


# -------------------------------------------------------------------------------------------------
# Loading a trained VAE
# -------------------------------------------------------------------------------------------------

NORMALIZER_FILE = "normalizer.safetensors"


def layout_fingerprint(graph: WeightGraph) -> str:
    """sha256 of the graph's JSON description: equal iff the layouts are equal."""
    return hashlib.sha256(json.dumps(graph.to_dict(), sort_keys=True).encode()).hexdigest()


def _describe_group(g) -> str:
    if g is None:
        return "nothing (fewer layers)"
    segs = ", ".join(f"{s.key} {list(s.shape)}" for s in g.segments)
    return f"{g.name!r} ({g.n_nodes} nodes x {g.feature_length} features: {segs})"


def check_same_layout(stored: WeightGraph, actual: WeightGraph, what: str) -> None:
    """Raise ``ValueError`` naming the first layer where ``actual`` differs from ``stored``."""
    if stored == actual:
        return
    for i in range(max(len(stored.groups), len(actual.groups))):
        a = stored.groups[i] if i < len(stored.groups) else None
        b = actual.groups[i] if i < len(actual.groups) else None
        if a != b:
            raise ValueError(
                f"{what}: weight-graph layout mismatch at layer {i}: the VAE was trained on {_describe_group(a)}, "
                f"got {_describe_group(b)}; retrain the VAE on this zoo (dynadiff train vae)"
            )
    raise ValueError(f"{what}: weight-graph kind differs ({stored.kind!r} vs {actual.kind!r})")


def load_vae(
    run_dir: str | os.PathLike, zoo=None, *, ema: bool = True, device: str | torch.device = "cpu"
) -> tuple[WeightVAE, WeightGraph, Any, dict[str, Any]]:
    """Load the VAE of a ``dynadiff train vae`` run -> ``(vae (eval mode), graph, normalizer, meta)``.

    Args:
        run_dir: the run folder (its latest checkpoint is loaded).
        zoo: a ``Zoo`` or zoo folder to check the stored weight-graph layout against (error naming the first
            mismatching layer), or None.
        ema: load the EMA weights (default, what generation uses) instead of the raw trained weights.
    Returns:
        meta: the checkpoint metadata (vae_config, graph, expert_config, system_name, losses, step, ...).
    """
    from dynadiff_fast import io
    from dynadiff_fast.generative.checkpoint import latest_checkpoint, load_checkpoint, read_meta
    from dynadiff_fast.weightspace.normalization import WeightNormalizer

    run_dir = Path(run_dir)
    meta = read_meta(run_dir)
    if meta is None:
        raise FileNotFoundError(f"run_dir: {run_dir} holds no VAE checkpoint (train one with `dynadiff train vae`)")
    if "vae_config" not in meta or "graph" not in meta:
        raise ValueError(f"run_dir: the checkpoint in {latest_checkpoint(run_dir)} is not a weight-VAE checkpoint")
    graph = WeightGraph.from_dict(meta["graph"])
    if layout_fingerprint(graph) != meta["layout_fingerprint"]:
        raise ValueError(f"run_dir: {run_dir}'s stored graph does not match its layout fingerprint (corrupt metadata)")
    if zoo is not None:
        if isinstance(zoo, str | os.PathLike):
            from dynadiff_fast.experts.zoo import Zoo

            zoo = Zoo.open(zoo)
        check_same_layout(graph, WeightGraph.from_config(zoo.config), f"zoo {getattr(zoo, 'root', '')}")
    normalizer = WeightNormalizer.from_state_dict(
        io.load_safetensors(run_dir / NORMALIZER_FILE, meta.get("normalizer_sha256"), "VAE weight normaliser")
    )
    if not normalizer.matches(graph):
        raise ValueError(f"run_dir: {run_dir / NORMALIZER_FILE} was fitted on another weight-graph layout")
    vae = WeightVAE(VAEConfig(**meta["vae_config"]), graph)
    if ema:
        load_checkpoint(run_dir, ema=vae)
    else:
        load_checkpoint(run_dir, vae)
    return vae.to(device).eval(), graph, normalizer, meta


# ---- the zoo in weight-token and latent form ----------------------------------------------------------------
def zoo_tokens(zoo, graph, chunk: int = 64):
    """Node tokens of every zoo expert (CPU, float32), read ``chunk`` experts at a time."""
    from dynadiff_fast.weightspace.graph import NodeTokens

    parts = [graph.encode(zoo.state_dicts(list(range(i, min(i + chunk, len(zoo)))))) for i in range(0, len(zoo), chunk)]
    return NodeTokens.cat(parts)


@torch.no_grad()
def encode_zoo(zoo, vae, graph, normalizer, device: torch.device, chunk: int = 64) -> torch.Tensor:
    """Encoder means ``[N, L, d]`` of every zoo expert (VAE in eval mode), computed in chunks of experts."""
    vae.eval()
    out = []
    for i in range(0, len(zoo), chunk):
        idx = list(range(i, min(i + chunk, len(zoo))))
        tokens = normalizer.normalize(graph.encode(zoo.batched(idx)).to(device))
        mu, _ = vae.encode(tokens)
        out.append(mu.float())
    return torch.cat(out)
