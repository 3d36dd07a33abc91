"""BatchedMLP: E Lotka–Volterra MLP experts (App. H.6) of one ``MLPExpertConfig``, weights stacked as ``[E, *shape]``.

Expert e is a neural ODE. Its vector field is the layer stack of the ``MLPExpert`` that ``MLPExpertConfig.build()``
makes,

    f_e(x) = W_n tanh( ... tanh(W_1 x + b_1) ... ) + b_n,        x, f_e(x) in R^C  (C = state_dim),

and one step of the expert (one frame, ``dt = config.dt`` apart) is one classical RK4 step of ``dx/dt = f_e(x)``,
exactly ``MLPExpert.forward`` (``configs.rk4_step(f_e, x, dt)``):

    k1 = f(x),  k2 = f(x + dt/2 k1),  k3 = f(x + dt/2 k2),  k4 = f(x + dt k3),
    x' = x + dt/6 (k1 + 2 k2 + 2 k3 + k4).

Every Linear runs for all experts as one batched GEMM over ``[E, B, width]`` (``baddbmm``, bias as its
accumulator), so ``BatchedMLP.from_modules(ms)(x)[e] == ms[e](x[e])`` to float rounding. The
conventions are ``BatchedFNO``'s with ODE frames ``[C]`` in place of ``[C, H, W]``:

    bm = BatchedMLP.from_modules(experts)            # MLPExperts; copies the weights into stacked Parameters
    y = bm(x)                                        # x [B, C] or [E, B, C] -> [E, B, C], one RK4 step
    traj = bm.rollout(x0, steps=10)                  # [E, B, 11, C], frame 0 = x0
    bm = BatchedMLP.from_stacked(cfg, decoded)       # no copy: gradients reach ``decoded`` (VAE loss)

Weights are named by the ``nn.Sequential`` state-dict keys (``0.weight``, ``0.bias``, ``2.weight``, ...);
``stacked()`` returns them.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from dynadiff_fast.experts.configs import MLPExpert, MLPExpertConfig
from dynadiff_fast.experts.stacked import StackedExperts, check_stacked_shapes, check_state_dict
from dynadiff_fast.state_dict import stack_state_dicts


@functools.lru_cache(maxsize=32)
def param_spec(config: MLPExpertConfig) -> dict[str, tuple[int, ...]]:
    """State-dict key -> shape of one expert (without the expert axis), in layer order."""
    with torch.device("meta"):  # only the keys and shapes are needed
        module = config.build()
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def config_of(module: nn.Module) -> MLPExpertConfig:
    """The ``MLPExpertConfig`` whose ``build()`` has ``module``'s structure (Linear, Tanh, ..., Linear) and step."""
    if not isinstance(module, MLPExpert):
        raise TypeError(f"module: expected the MLPExpert of MLPExpertConfig.build(), got {type(module).__name__}")
    linears = [m for m in module if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError("module: has no nn.Linear layer")
    hidden = linears[0].out_features if len(linears) > 1 else MLPExpertConfig.hidden  # unused with one layer
    config = MLPExpertConfig(state_dim=linears[0].in_features, hidden=hidden, n_layers=len(linears), dt=module.dt)
    with torch.device("meta"):
        built = config.build()
    same_layers = [type(m) for m in module] == [type(m) for m in built]
    shapes = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    if not same_layers or shapes != param_spec(config):
        raise ValueError(f"module: {module} is not the structure MLPExpertConfig.build() makes ({built})")
    return config


class BatchedMLP(StackedExperts):
    """E MLP vector-field experts of one ``MLPExpertConfig``, weights stacked along a leading expert axis,
    each stepped by RK4 with the config's step ``dt``.

    Construct with ``from_modules``, ``from_state_dicts`` or ``from_stacked`` (or directly:
    ``BatchedMLP(config, {key: Tensor[E, ...]}, parameters=True)``).

    Args:
        config: the experts' architecture.
        weights: ``nn.Sequential`` state-dict key -> stacked tensor ``[E, *shape]``; every key of the
            architecture, nothing else, one E, one floating dtype.
        parameters: True: the tensors become this module's ``nn.Parameter`` (trainable, moved by ``.to``;
            they share storage with the given tensors). False: they are kept as given (not moved by
            ``.to``), so autograd flows back to whatever produced them (``from_stacked``).
    """

    def __init__(
        self,
        config: MLPExpertConfig,
        weights: Mapping[str, torch.Tensor],
        *,
        parameters: bool = True,
    ) -> None:
        super().__init__()
        if not isinstance(config, MLPExpertConfig):
            raise TypeError(f"config: expected an MLPExpertConfig, got {type(config).__name__}")
        self.config = config
        self.dt = config.dt
        self.num_experts = _check_stacked(config, weights)
        self._store(param_spec(config), weights, parameters)

    # -- construction ------------------------------------------------------------------------------
    @classmethod
    def from_modules(cls, modules: Sequence[nn.Module]) -> BatchedMLP:
        """Stack the weights of ``MLPExpertConfig.build()`` modules (one architecture) into new Parameters."""
        if len(modules) == 0:
            raise ValueError("modules: expected at least one MLP, got an empty list")
        config = config_of(modules[0])
        for i, m in enumerate(modules[1:], start=1):
            cfg_i = config_of(m)
            if cfg_i != config:
                raise ValueError(f"modules: module {i} has architecture {cfg_i}, module 0 has {config}")
        return cls.from_state_dicts(config, [m.state_dict() for m in modules])

    @classmethod
    def from_state_dicts(cls, config: MLPExpertConfig, state_dicts: Sequence[Mapping[str, torch.Tensor]]) -> BatchedMLP:
        """Stack state dicts of architecture ``config`` into new Parameters."""
        if len(state_dicts) == 0:
            raise ValueError("state_dicts: expected at least one state dict, got an empty list")
        spec = param_spec(config)
        for i, sd in enumerate(state_dicts):
            check_state_dict(spec, sd, f"state_dicts[{i}]")
        stacked = stack_state_dicts(state_dicts, spec)
        return cls(config, {k: v.detach() for k, v in stacked.items()}, parameters=True)

    @classmethod
    def from_stacked(cls, config: MLPExpertConfig, stacked: Mapping[str, torch.Tensor]) -> BatchedMLP:
        """Wrap stacked weights ``{key: Tensor[E, ...]}`` without copying: outputs stay differentiable
        with respect to the given tensors (the VAE's functional loss trains through this)."""
        return cls(config, stacked, parameters=False)

    # -- access --------------------------------------------------------------------------------------
    def to_modules(self) -> list[nn.Module]:
        """One ``MLPExpertConfig.build()`` expert per expert, holding copies of its weights."""
        ref = next(iter(self.stacked().values()))
        out = []
        for sd in self.state_dicts():
            m = self.config.build().to(device=ref.device, dtype=ref.dtype)
            m.load_state_dict(sd)
            out.append(m)
        return out

    def extra_repr(self) -> str:
        return f"num_experts={self.num_experts}, config={self.config}"

    # -- forward -------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """One RK4 step of every expert: x [B, C] (same input for every expert) or [E, B, C] -> [E, B, C]."""
        return self._step(self._layers(), self._as_batched(x, "x"))

    def vector_field(self, x: torch.Tensor) -> torch.Tensor:
        """The experts' vector fields f_e(x) (no integration): x [B, C] or [E, B, C] -> [E, B, C]."""
        return self._field(self._layers(), self._as_batched(x, "x"))

    def rollout(self, x0: torch.Tensor, steps: int) -> torch.Tensor:
        """Autoregressive rollout x_{t+1} = RK4_dt(f_e)(x_t): x0 [B, C] or [E, B, C] -> [E, B, steps + 1, C]
        with frame 0 = x0."""
        if not isinstance(steps, int) or isinstance(steps, bool) or steps < 0:
            raise ValueError(f"steps: expected an integer >= 0, got {steps!r}")
        layers = self._layers()
        xt = self._as_batched(x0, "x0")
        frames = [xt.expand(self.num_experts, *xt.shape[1:])]
        for _ in range(steps):
            xt = self._step(layers, xt)
            frames.append(xt)
        return torch.stack(frames, dim=2)

    def _layers(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(weight [E, out, in], bias [E, out]) per Linear, in forward order."""
        w = self.stacked()
        return [(w[k], w[k[: -len("weight")] + "bias"]) for k in self._keys if k.endswith(".weight")]

    @staticmethod
    def _field(layers: list[tuple[torch.Tensor, torch.Tensor]], x: torch.Tensor) -> torch.Tensor:
        """f_e(x) for x [E|1, B, C] -> [E, B, C]: per Linear one baddbmm over E, ``b + h W^T``."""
        h = x
        for j, (weight, bias) in enumerate(layers):
            if j:
                h = torch.tanh(h)
            # a shared input (leading 1) is read through a stride-0 expert axis, not copied E times
            h = torch.baddbmm(bias[:, None, :], h.expand(weight.shape[0], *h.shape[1:]), weight.transpose(1, 2))
        return h

    def _step(self, layers: list[tuple[torch.Tensor, torch.Tensor]], x: torch.Tensor) -> torch.Tensor:
        """One classical RK4 step of size dt, ``configs.rk4_step``'s arithmetic: x [E|1, B, C] -> [E, B, C]."""
        dt = self.dt
        k1 = self._field(layers, x)
        k2 = self._field(layers, x + 0.5 * dt * k1)
        k3 = self._field(layers, x + 0.5 * dt * k2)
        k4 = self._field(layers, x + dt * k3)
        return x + dt / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4)

    # -- checks --------------------------------------------------------------------------------------
    def _as_batched(self, x: torch.Tensor, name: str) -> torch.Tensor:
        """Validate ``x`` and return it as [E|1, B, C] (a shared [B, C] gets a leading 1)."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
        dtype = next(iter(self.stacked().values())).dtype
        if x.dtype != dtype:
            raise TypeError(f"{name}: dtype {x.dtype} does not match the experts' weights ({dtype})")
        if x.dim() not in (2, 3):
            raise ValueError(f"{name}: expected [B, C] or [E, B, C], got shape {tuple(x.shape)}")
        if x.dim() == 3 and x.shape[0] != self.num_experts:
            raise ValueError(f"{name}: leading axis {x.shape[0]} != num_experts {self.num_experts}")
        if x.shape[-1] != self.config.state_dim:
            raise ValueError(
                f"{name}: {x.shape[-1]} channels (axis -1), the experts take state_dim={self.config.state_dim}"
            )
        return x[None] if x.dim() == 2 else x


def _check_stacked(config: MLPExpertConfig, weights: Mapping[str, torch.Tensor]) -> int:
    """Validate stacked weights against ``config`` (one real floating dtype); return E."""
    spec = param_spec(config)
    E = check_stacked_shapes(spec, weights, config)
    dtypes = {weights[k].dtype for k in spec}
    if len(dtypes) != 1 or not next(iter(dtypes)).is_floating_point:
        raise TypeError(f"weights: expected one real floating dtype for every tensor, got {sorted(map(str, dtypes))}")
    return E
