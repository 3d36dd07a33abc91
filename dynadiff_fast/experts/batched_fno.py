"""BatchedFNO: E neuraloperator FNO experts of one architecture, weights stacked as ``[E, *shape]``.

One forward runs every expert on its own (or a shared) input, layer by layer for all experts at
once: pointwise layers are batched GEMMs over ``[E, B]`` (bias and skip terms as the GEMM's
accumulator), spectral layers a truncated DFT to the kept modes (two small GEMMs), one
``ops.spectral_mix`` call and the truncated inverse DFT, for all experts. The math is
neuraloperator's FNO (v2.0) step for step, so ``BatchedFNO.from_modules(ms)(x)[e] == ms[e](x)`` to
float rounding (~1e-7 relative in fp32). Experts run in chunks sized to the cache (``chunk_size``).

    bf = BatchedFNO.from_modules(experts)           # copies the weights into stacked Parameters
    y = bf(x)                                        # x [B, C, H, W] or [E, B, C, H, W] -> [E, B, C_out, H, W]
    traj = bf.rollout(x0, steps=10)                  # [E, B, 11, C, H, W], frame 0 = x0
    bf = BatchedFNO.from_stacked(cfg, decoded)       # no copy: gradients reach ``decoded`` (VAE loss)

Weights are named by the neuraloperator ``state_dict`` keys (``fno_blocks.convs.0.weight.tensor``,
...); ``stacked()`` returns them. Supported architectures are those an ``ExpertConfig`` describes
(neuraloperator's defaults plus the skip / channel-MLP / lifting / embedding / preactivation options);
other FNO options (norms, factorisation, padding, ...) are rejected when the experts are built.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from dynadiff_fast.experts.configs import ExpertConfig
from dynadiff_fast.experts.stacked import StackedExperts, check_stacked_shapes, check_state_dict
from dynadiff_fast.ops.spectral_mix import spectral_mix
from dynadiff_fast.state_dict import module_tensors, stack_state_dicts, tensor_entries

# Bytes of the widest activation of one chunk of experts in a batched forward. Chunks this size
# (measured on one core, bench/bench_batched_fno.py) amortise the per-op overhead over many small
# experts, while bigger ones stream activations through DRAM and pay the allocator's fresh pages.
CHUNK_BYTES = 4 << 20


@functools.lru_cache(maxsize=32)
def param_spec(config: ExpertConfig) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """neuraloperator state_dict key -> (shape, dtype) of one expert (without the expert axis)."""
    with torch.random.fork_rng():
        module = config.build()
    return {k: (tuple(v.shape), v.dtype) for k, v in module_tensors(module).items()}


@functools.lru_cache(maxsize=16)
def _grid(h: int, w: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """neuraloperator's grid embedding channels ``[2, H, W]``: coordinates ``linspace(0, 1, n+1)[:-1]``."""
    from neuralop.layers.embeddings import regular_grid_nd

    gx, gy = regular_grid_nd([h, w], grid_boundaries=[[0.0, 1.0], [0.0, 1.0]])
    return torch.stack([gx, gy]).to(device=device, dtype=dtype)


def _mode_rows(m1: int, h: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Spectrum rows (frequencies mod ``h``) read and written for the ``m1`` kept modes along H.

    Weight row ``j`` holds frequency ``f = j - m1 // 2`` (neuraloperator's fftshift-centred block)
    and reads spectrum row ``f mod h``. neuraloperator writes the result back through a second
    ``fftshift`` (not ``ifftshift``), which for odd ``h`` lands frequency ``f`` on row ``(f - 1) mod h``;
    we reproduce that so the outputs agree for every grid.
    """
    freqs = torch.arange(m1, dtype=torch.float64) - m1 // 2
    return freqs % h, (freqs - (h % 2)) % h


@functools.lru_cache(maxsize=64)
def _dft_matrices(
    h: int, w: int, m1: int, m2: int, dtype: torch.dtype, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Truncated real DFT matrices of FNO's kept modes (built in float64, then cast).

    Forward, ``rfft2(x, norm="forward")`` restricted to the kept modes:
        along W  ``fw [W, 2*m2]``  = [cos | -sin](2 pi k w / W) / W,          k < m2
        along H  ``fh [2*m1, H]``  = [cos ; -sin](2 pi r_j h / H) / H,         r_j = read row of mode j
    Inverse, ``irfft2(., s=(H, W), norm="forward")`` of a spectrum that is zero outside the modes:
        along H  ``gh [H, 2*m1]``  = [cos | sin](2 pi r'_j h / H),             r'_j = write row of mode j
        along W  ``gw [2*m2, W]``  = [c_k cos ; -c_k sin](2 pi k w / W),       c_0 = c_{W/2} = 1, else 2
    (irfft takes the real part of the k = 0 and Nyquist columns, which the sin rows, zero there, do too).
    """
    read, write = _mode_rows(m1, h)
    k = torch.arange(m2, dtype=torch.float64)
    ang_w = 2 * torch.pi * torch.outer(k, torch.arange(w, dtype=torch.float64)) / w  # [m2, W]
    hs = torch.arange(h, dtype=torch.float64)
    ang_r = 2 * torch.pi * torch.outer(read, hs) / h  # [m1, H]
    ang_g = 2 * torch.pi * torch.outer(hs, write) / h  # [H, m1]
    c = torch.full((m2, 1), 2.0, dtype=torch.float64)
    c[0] = 1.0
    if w % 2 == 0 and m2 == w // 2 + 1:
        c[-1] = 1.0
    fw = torch.cat([ang_w.cos(), -ang_w.sin()]).T / w
    fh = torch.cat([ang_r.cos(), -ang_r.sin()]) / h
    gh = torch.cat([ang_g.cos(), ang_g.sin()], dim=1)
    gw = torch.cat([c * ang_w.cos(), -c * ang_w.sin()])
    return tuple(t.to(device=device, dtype=dtype).contiguous() for t in (fw, fh, gh, gw))


def _pointwise(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, base: torch.Tensor | None = None
) -> torch.Tensor:
    """1x1 conv per expert, ``weight @ x + (bias or base)``: x [E|1, B, C, P], weight [E, O, C, 1]
    (Conv1d layout), bias [E, O] or base [E, B, O, P] -> [E, B, O, P]. One batched GEMM over E*B with
    the bias / base as its accumulator input (no extra pass over the output)."""
    E, O, C = weight.shape[:3]
    B, P = x.shape[1], x.shape[-1]
    w = weight[:, None, :, :, 0].expand(E, B, O, C).reshape(E * B, O, C)
    xb = x.expand(E, B, C, P).reshape(E * B, C, P)
    if base is not None:
        acc = base.reshape(E * B, O, P)
    elif bias is not None:
        acc = bias[:, None, :, None].expand(E, B, O, 1).reshape(E * B, O, 1)
    else:
        return torch.bmm(w, xb).view(E, B, O, P)
    return torch.baddbmm(acc, w, xb).view(E, B, O, P)


def _channel_mlp(
    x: torch.Tensor, w: Mapping[str, torch.Tensor], prefix: str, n_layers: int, base: torch.Tensor | None = None
) -> torch.Tensor:
    """neuraloperator ChannelMLP (Conv1d k=1 layers, GELU between) on x [E|1, B, C, P]; ``base`` (which
    then already holds the last layer's bias) is added to the output."""
    for j in range(n_layers):
        last = j == n_layers - 1
        bias = None if (last and base is not None) else w[f"{prefix}.fcs.{j}.bias"]
        x = _pointwise(x, w[f"{prefix}.fcs.{j}.weight"], bias, base if last else None)
        if not last:
            x = F.gelu(x)
    return x


def _skip(x: torch.Tensor, w: Mapping[str, torch.Tensor], prefix: str, kind: str, bias: torch.Tensor) -> torch.Tensor:
    """neuraloperator skip connection on x [E, B, C, P], plus ``bias`` [E, C] (the bias of the layer
    whose output the skip is added to, folded in here to save a pass)."""
    if kind == "linear":
        return _pointwise(x, w[f"{prefix}.conv.weight"], bias)
    b = bias[:, None, :, None]
    if kind == "soft-gating":
        return torch.addcmul(b, x, w[f"{prefix}.weight"][..., 0])  # gate [E, 1, C, 1, 1] -> [E, 1, C, 1]
    return x + b  # identity


def _spectral_conv(
    x: torch.Tensor, weight: torch.Tensor, hw: tuple[int, int], backend: str, base: torch.Tensor
) -> torch.Tensor:
    """neuraloperator SpectralConv for E experts without its bias, plus ``base``:
    x [E, B, I, P] (P = H*W), base [E, B, O, P] (or [E, B, O, H, 1]) -> conv(x) + base [E, B, O, P].

    weight [E, I, O, m1, m2] complex holds the modes (-m1//2 .. (m1+1)//2 - 1) x (0 .. m2-1). With so
    few modes kept, the forward and inverse transforms restricted to them are small real matmuls
    (``_dft_matrices``), cheaper than full FFTs and free of [.., H, W//2+1] complex buffers; the
    mode mixing in between is ``ops.spectral_mix``.
    """
    E, B, _, _ = x.shape
    h, w = hw
    m1, m2 = weight.shape[-2:]
    fw, fh, gh, gw = _dft_matrices(h, w, m1, m2, x.dtype, x.device)
    # forward: along W then H; p = [[Fr Xr, Fr Xi], [Fi Xr, Fi Xi]] blocks -> complex modes
    p = torch.matmul(fh, (x.reshape(-1, w) @ fw).reshape(-1, h, 2 * m2))  # [E*B*I, 2*m1, 2*m2]
    re = p[:, :m1, :m2] - p[:, m1:, m2:]
    im = p[:, :m1, m2:] + p[:, m1:, :m2]
    modes = torch.complex(re, im).reshape(E, B, -1, m1, m2)
    y = spectral_mix(modes, weight, backend=backend)  # [E, B, O, m1, m2]
    # inverse: [Zr | Zi] = [Gr | Gi] @ [[Yr, Yi], [-Yi, Yr]] along H, then the real synthesis along W
    yr, yi = y.real.reshape(-1, m1, m2), y.imag.reshape(-1, m1, m2)
    z = torch.matmul(gh, torch.cat([torch.cat([yr, yi], dim=2), torch.cat([-yi, yr], dim=2)], dim=1))
    out = torch.addmm(base.reshape(E * B * y.shape[2] * h, -1), z.reshape(-1, 2 * m2), gw)
    return out.view(E, B, -1, h * w)


class BatchedFNO(StackedExperts):
    """E FNO experts of one ``ExpertConfig``, weights stacked along a leading expert axis.

    Construct with ``from_modules``, ``from_state_dicts`` or ``from_stacked`` (or directly:
    ``BatchedFNO(config, {key: Tensor[E, ...]}, parameters=True)``).

    Args:
        config: the experts' architecture.
        weights: neuraloperator state_dict key -> stacked tensor ``[E, *shape]``; every key of the
            architecture, nothing else, one E.
        parameters: True: the tensors become this module's ``nn.Parameter`` (trainable, moved by
            ``.to``; they share storage with the given tensors). False: they are kept as given (not
            moved by ``.to``), so autograd flows back to whatever produced them (``from_stacked``).
        backend: ``ops.spectral_mix`` backend.
    """

    def __init__(
        self,
        config: ExpertConfig,
        weights: Mapping[str, torch.Tensor],
        *,
        parameters: bool = True,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        if not isinstance(config, ExpertConfig):
            raise TypeError(f"config: expected an ExpertConfig, got {type(config).__name__}")
        self.config = config
        self.backend = backend
        self.num_experts = _check_stacked(config, weights)
        self._store(param_spec(config), weights, parameters)

    # -- construction ------------------------------------------------------------------------------
    @classmethod
    def from_modules(cls, modules: Sequence[nn.Module], *, backend: str = "auto") -> BatchedFNO:
        """Stack the weights of neuraloperator FNOs (all of one architecture) into new Parameters."""
        if len(modules) == 0:
            raise ValueError("modules: expected at least one FNO, got an empty list")
        config = ExpertConfig.from_module(modules[0])
        for i, m in enumerate(modules[1:], start=1):
            cfg_i = ExpertConfig.from_module(m)
            if cfg_i != config:
                raise ValueError(f"modules: module {i} has architecture {cfg_i}, module 0 has {config}")
        return cls.from_state_dicts(config, [m.state_dict() for m in modules], backend=backend)

    @classmethod
    def from_state_dicts(
        cls, config: ExpertConfig, state_dicts: Sequence[Mapping[str, torch.Tensor]], *, backend: str = "auto"
    ) -> BatchedFNO:
        """Stack neuraloperator FNO state dicts of architecture ``config`` into new Parameters."""
        if len(state_dicts) == 0:
            raise ValueError("state_dicts: expected at least one state dict, got an empty list")
        spec = param_spec(config)
        for i, sd in enumerate(state_dicts):
            check_state_dict({k: shape for k, (shape, _) in spec.items()}, tensor_entries(sd), f"state_dicts[{i}]")
        stacked = stack_state_dicts([tensor_entries(sd) for sd in state_dicts], spec)
        return cls(config, {k: v.detach() for k, v in stacked.items()}, parameters=True, backend=backend)

    @classmethod
    def from_stacked(
        cls, config: ExpertConfig, stacked: Mapping[str, torch.Tensor], *, backend: str = "auto"
    ) -> BatchedFNO:
        """Wrap stacked weights ``{key: Tensor[E, ...]}`` without copying: outputs stay differentiable
        with respect to the given tensors (the VAE's functional loss trains through this)."""
        return cls(config, stacked, parameters=False, backend=backend)

    def settings(self) -> dict[str, str]:
        return {"backend": self.backend}

    # -- access --------------------------------------------------------------------------------------
    def to_modules(self) -> list[nn.Module]:
        """One neuraloperator FNO per expert, holding copies of its weights."""
        out = []
        device = next(iter(self.stacked().values())).device
        for sd in self.state_dicts():
            m = self.config.build().to(device)
            m.load_state_dict(sd)
            out.append(m)
        return out

    def extra_repr(self) -> str:
        return f"num_experts={self.num_experts}, config={self.config}, backend={self.backend!r}"

    # -- forward -------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, chunk_size: int | None = None) -> torch.Tensor:
        """x [B, C, H, W] (same input for every expert) or [E, B, C, H, W] -> [E, B, C_out, H, W].

        ``chunk_size`` experts run at a time (default: as many as keep ~CHUNK_BYTES of activations).
        """
        outs = [self._forward_chunk(wc, xc) for wc, xc in self._chunks(x, "x", chunk_size)]
        return outs[0] if len(outs) == 1 else torch.cat(outs)

    def rollout(self, x0: torch.Tensor, steps: int, chunk_size: int | None = None) -> torch.Tensor:
        """Autoregressive rollout x_{t+1} = f_e(x_t): x0 [B, C, H, W] or [E, B, C, H, W]
        -> [E, B, steps + 1, C, H, W] with frame 0 = x0. Each chunk of experts is rolled out fully
        before the next (cache locality)."""
        if self.config.in_channels != self.config.out_channels:
            raise ValueError(
                f"rollout needs in_channels == out_channels, config has {self.config.in_channels} "
                f"and {self.config.out_channels}"
            )
        if not isinstance(steps, int) or steps < 0:
            raise ValueError(f"steps: expected an integer >= 0, got {steps!r}")
        outs = []
        for wc, xt in self._chunks(x0, "x0", chunk_size):
            xt = xt.expand(next(iter(wc.values())).shape[0], *xt.shape[1:])
            frames = [xt]
            for _ in range(steps):
                xt = self._forward_chunk(wc, xt)
                frames.append(xt)
            outs.append(torch.stack(frames, dim=2))
        return outs[0] if len(outs) == 1 else torch.cat(outs)

    def _chunks(self, x: torch.Tensor, name: str, chunk_size: int | None):
        """Validate ``x`` and yield (weights, input [E_chunk|1, B, C, H, W]) per chunk of experts."""
        shared = self._check_input(x, name)
        chunk = self._chunk(x, chunk_size)
        w = self.stacked()
        for e0 in range(0, self.num_experts, chunk):
            sl = slice(e0, min(e0 + chunk, self.num_experts))
            yield {k: v[sl] for k, v in w.items()}, (x[None] if shared else x[sl])

    def _forward_chunk(self, w: Mapping[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """x [E|1, B, C, H, W] -> [E, B, C_out, H, W] for the experts whose weights are ``w``."""
        cfg = self.config
        n_exp, B, _, h, wd = x.shape
        x = x.reshape(n_exp, B, -1, h * wd)
        if cfg.positional_embedding == "grid":
            grid = _grid(h, wd, x.dtype, x.device).reshape(1, 1, 2, h * wd)
            x = torch.cat([x, grid.expand(n_exp, B, 2, h * wd)], dim=2)
        x = _channel_mlp(x, w, "lifting", 2 if cfg.lifting_channels else 1)
        for layer in range(cfg.n_layers):
            x = self._block(x, w, layer, (h, wd))
        x = _channel_mlp(x, w, "projection", 2)
        return x.reshape(x.shape[0], B, -1, h, wd)

    def _block(self, x: torch.Tensor, w: Mapping[str, torch.Tensor], layer: int, hw: tuple[int, int]) -> torch.Tensor:
        """neuraloperator FNOBlocks.forward (post- or pre-activation) for layer ``layer``; x [E, B, C, P]."""
        cfg = self.config
        last = layer == cfg.n_layers - 1
        p = "fno_blocks"
        if cfg.preactivation:
            x = F.gelu(x)
        conv = f"{p}.convs.{layer}"
        conv_bias = w[f"{conv}.bias"][..., 0, 0]  # [E, O]
        if cfg.fno_skip:
            base = _skip(x, w, f"{p}.fno_skips.{layer}", cfg.fno_skip, conv_bias)
        else:  # the bias alone, constant along W: broadcast over the addmm's columns
            E, B = x.shape[:2]
            base = conv_bias[:, None, :, None, None].expand(E, B, -1, hw[0], 1)
        skip_mlp = None
        if cfg.use_channel_mlp and cfg.channel_mlp_skip is not None:
            mlp_bias = w[f"{p}.channel_mlp.{layer}.fcs.1.bias"]
            skip_mlp = _skip(x, w, f"{p}.channel_mlp_skips.{layer}", cfg.channel_mlp_skip, mlp_bias)
        x = _spectral_conv(x, w[f"{conv}.weight.tensor"], hw, self.backend, base)
        if not last:
            x = F.gelu(x)
        if cfg.use_channel_mlp:
            x = _channel_mlp(x, w, f"{p}.channel_mlp.{layer}", 2, base=skip_mlp)
        if not last and not cfg.preactivation:
            x = F.gelu(x)
        return x

    # -- checks --------------------------------------------------------------------------------------
    def _check_input(self, x: torch.Tensor, name: str) -> bool:
        """Validate ``x``; True when it is one input [B, C, H, W] shared by all experts."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
        w0 = next(iter(self.stacked().values()))
        real = torch.float64 if w0.dtype in (torch.float64, torch.complex128) else torch.float32
        if x.dtype != real:
            raise TypeError(f"{name}: dtype {x.dtype} does not match the experts' weights ({real})")
        if x.dim() not in (4, 5):
            raise ValueError(f"{name}: expected [B, C, H, W] or [E, B, C, H, W], got shape {tuple(x.shape)}")
        if x.dim() == 5 and x.shape[0] != self.num_experts:
            raise ValueError(f"{name}: leading axis {x.shape[0]} != num_experts {self.num_experts}")
        c, h, wd = x.shape[-3:]
        if c != self.config.in_channels:
            raise ValueError(f"{name}: {c} channels (axis -3), the experts take in_channels={self.config.in_channels}")
        m1, m2 = self.config.weight_modes
        if h < m1 or wd // 2 + 1 < m2:
            raise ValueError(
                f"{name}: grid {h}x{wd} is too small for n_modes={self.config.n_modes} "
                f"(needs H >= {m1} and W // 2 + 1 >= {m2})"
            )
        return x.dim() == 4

    def _chunk(self, x: torch.Tensor, chunk_size: int | None) -> int:
        """Experts per chunk: ``chunk_size`` when given, else the cache-sized default."""
        if chunk_size is None:
            return self._auto_chunk(x)
        if not isinstance(chunk_size, int) or chunk_size < 1:
            raise ValueError(f"chunk_size: expected an integer >= 1 or None, got {chunk_size!r}")
        return chunk_size

    def _auto_chunk(self, x: torch.Tensor) -> int:
        cfg = self.config
        B = x.shape[-4]
        width = max(cfg.hidden_channels, cfg.lifting_channels, cfg.projection_channels)
        per_expert = B * width * x.shape[-2] * x.shape[-1] * x.element_size()
        return max(1, min(self.num_experts, CHUNK_BYTES // max(per_expert, 1)))


def _check_stacked(config: ExpertConfig, weights: Mapping[str, torch.Tensor]) -> int:
    """Validate stacked weights against ``config`` (spectral weights complex, the rest real, one precision);
    return E."""
    spec = param_spec(config)
    items = tensor_entries(weights)
    E = check_stacked_shapes({k: shape for k, (shape, _) in spec.items()}, items, config)
    real = None
    for k, (_, dtype) in spec.items():
        t = items[k]
        if dtype.is_complex != t.dtype.is_complex or not (t.dtype.is_complex or t.dtype.is_floating_point):
            kind = "complex" if dtype.is_complex else "real floating"
            raise TypeError(f"weights[{k!r}]: dtype {t.dtype}, expected a {kind} dtype")
        r = t.real.dtype if t.dtype.is_complex else t.dtype
        if real is not None and r != real:
            raise TypeError(f"weights[{k!r}]: precision {t.dtype} differs from the other weights ({real})")
        real = r
    return E
