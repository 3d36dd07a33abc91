"""The Lawson (integrating-factor) RK4 pseudo-spectral solver, written once for the periodic 2-D systems.

Equation / stepper split (after jax-cfd): each system's solver states its equation

    d v_hat/dt = L v_hat + N(v_hat),     L = -d |k|^2,     N = mask * rfft2(n(fields)) + f_hat

by supplying the diffusivity ``d`` of the linear operator (per row or shared), the nonlinear term
``n`` evaluated pointwise in physical space, and the forcing spectrum ``f_hat`` (or none);
``LawsonSolver`` is the stepper. Scheme (4th order; ``L`` is diagonal and integrated exactly, so only
the explicit ``N`` limits the step), with ``E = exp(L dt / 2)``:

    k1 = N(v)
    k2 = N(E (v + dt/2 k1))
    k3 = N(E v + dt/2 k2)
    k4 = N(E^2 v + dt E k3)
    v' = E^2 v + dt/6 (E^2 k1 + 2 E k2 + 2 E k3 + k4)

One stage is ``to physical -> n -> rfft2 -> ns_stage``; the fused ``ns_stage`` op dealiases (2/3 rule:
``mask``), adds the forcing, combines the stage and hands back the next stage's input spectra (for the
vorticity form, the Poisson solve's ``(u, v, w_x, w_y)``). The initial state is masked too, so the
state never holds a mode above the 2/3 cutoff. The step is chosen per saved frame from the Courant
number of the explicit part (``spectral.choose_substeps``).
"""

from __future__ import annotations

import abc
import dataclasses
import functools
from collections.abc import Callable
from typing import ClassVar

import torch

from dynadiff_fast.ops import ns_stage as ops
from dynadiff_fast.profiling import nvtx_range
from dynadiff_fast.systems import spectral
from dynadiff_fast.systems.base import System


@dataclasses.dataclass(frozen=True)
class PseudoSpectralSystem(System):
    """A system on a periodic ``resolution x resolution`` grid stepped by a ``LawsonSolver``.

    Subclasses are frozen dataclasses with (at least) the settings ``resolution``, ``dt_frame``,
    ``burn_in``, ``cfl``, ``substeps`` and ``dtype`` (see ``spectral.validate_settings``), a ``domain``,
    and ``make_solver``.
    """

    step_range: ClassVar[str]  # NVTX range around one solver step

    @abc.abstractmethod
    def make_solver(self, params: torch.Tensor, device, backend: str, initial: torch.Tensor) -> LawsonSolver:
        """The solver of one ``simulate`` call, started from ``initial`` (solver dtype, on ``device``)."""

    @property
    def grid(self) -> tuple[int, int]:
        return (self.resolution, self.resolution)

    def spectral_grid(self, device=None) -> spectral.SpectralGrid:
        (x0, x1), (y0, y1) = self.domain
        return spectral.SpectralGrid.build(self.grid, (y1 - y0, x1 - x0), spectral.dtype_of(self.dtype), device)

    def simulate(self, params, initial=None, n_frames=10, seed=0, backend="auto", device=None) -> torch.Tensor:
        """One trajectory per row of ``params`` ``[n, P]``: ``[n, n_frames + 1, len(channel_names), H, W]``.
        ``initial [n, len(initial_channels), H, W]``, or None for seeded random states followed by
        ``burn_in``."""
        p = self.validate_params(params)
        self.check_frames(n_frames)
        spectral.check_backend(backend)
        dev = spectral.resolve_device(device, initial)
        if initial is None:
            u0, burn_in = self.random_initial(p.shape[0], seed, dev), self.burn_in
        else:
            u0, burn_in = spectral.check_initial(self, initial, p.shape[0]).to(dev), 0.0
        return spectral.run_frames(self.make_solver(p, dev, backend, u0), burn_in, self.dt_frame, n_frames)


class LawsonSolver(abc.ABC):
    """Spectral operators and running state of one ``simulate`` call (one batch of environments).

    ``state``: the dealiased spectrum ``[n, F, H, Wr]`` of the F prognostic fields. ``phys``: what the
    next stage's nonlinear term reads, the physical form of the stage op's output: real ``[n, C, H, W]``
    ("half" layout, ``irfft2``), or complex ``[n, C/2, H, W]`` field pairs ``a - i b`` ("packed",
    ``fft2``; see ``ops.ns_stage``). C = 4 ``(u, v, w_x, w_y)`` when ``velocity``, else the F fields.

    A subclass (the equation) defines ``diffusivity``, ``nonlinear``, ``courant_rate`` and ``frame``,
    and ``forcing_hat`` when forced.
    """

    # True for the vorticity form: the stage op returns the spectra of (u, v, w_x, w_y) from the Poisson
    # solve, what the advection reads, instead of the prognostic fields themselves.
    velocity: ClassVar[bool] = False
    cpp_layout: ClassVar[str] = "half"  # the layout asked of the fused CPU kernel; other backends: "half"

    def __init__(self, system: PseudoSpectralSystem, params: torch.Tensor, device, backend: str, u0: torch.Tensor):
        self.system, self.params, self.device = system, params, device
        self.grid = g = system.spectral_grid(device)
        self.kx, self.ky = g.kx[0].contiguous(), g.ky[:, 0].contiguous()
        self.diffusion = self.diffusivity()
        self.forcing = self.forcing_hat()
        self._decay: tuple[float, torch.Tensor] | None = None
        self.state = torch.fft.rfft2(u0) * g.mask
        on_cpp = ops.OP.resolve(backend, self.state.device.type) == "cpp"
        self.layout = self.cpp_layout if on_cpp else "half"
        self.phys = self.to_physical(self.stage_output(self.state))
        # Validate the operands once through the public op, then run the resolved kernels directly
        # (``advection_fn``: the backend's advection product, the vorticity form's nonlinear term).
        checked = self.bind_stage(functools.partial(ops.ns_stage, backend=backend))
        checked(1, self.state, self.state, self.half_decay(1.0), 1.0)
        stage_fn, self.advection_fn = ops.bind(backend, self.state.device.type)
        self.stage = self.bind_stage(stage_fn)

    # ---- the equation: what a subclass defines -------------------------------------------------------
    @abc.abstractmethod
    def diffusivity(self) -> torch.Tensor:
        """``d`` of the linear operator ``L = -d |k|^2``: per row ``[n]`` or shared ``[1]``."""

    def forcing_hat(self) -> torch.Tensor | None:
        """Dealiased forcing spectrum ``[n or 1, F, H, Wr]`` in the solver's complex dtype, or None."""
        return None

    @abc.abstractmethod
    def nonlinear(self, fields: torch.Tensor) -> torch.Tensor:
        """The nonlinear term ``[n, F, H, W]`` in physical space from ``phys``."""

    @abc.abstractmethod
    def courant_rate(self) -> torch.Tensor:
        """Per-row Courant number per unit step ``[n]`` of the current state (sets the step)."""

    @abc.abstractmethod
    def frame(self) -> torch.Tensor:
        """The saved channels ``[n, C, H, W]`` of the current state."""

    # ---- the stepper -----------------------------------------------------------------------------------
    def bind_stage(self, fn: Callable[..., tuple[torch.Tensor, torch.Tensor]]):
        """``fn`` (``ns_stage``'s signature) as ``(stage, nonlin_hat, acc, half_decay, dt) -> (acc, next)``
        with the operands that are fixed for the run filled in."""
        g = self.grid

        def stage(s, nonlin_hat, acc, half_decay, dt):
            return fn(s, nonlin_hat, self.state, acc, half_decay, self.kx, self.ky, g.mask, dt, self.forcing,
                      self.velocity, self.layout, g.shape[1])  # fmt: skip

        return stage

    def stage_output(self, spec: torch.Tensor) -> torch.Tensor:
        """What the stage op returns as ``next`` for the spectrum ``spec``: the first stage's input."""
        if self.velocity:
            spec = ops.velocity_spectra(spec, self.kx, self.ky)
        return ops.reference.pack(spec, self.grid.shape[1]) if self.layout == "packed" else spec

    def to_physical(self, spec: torch.Tensor) -> torch.Tensor:
        if self.layout == "packed":
            return torch.fft.fft2(spec)
        return torch.fft.irfft2(spec, s=self.grid.shape)

    def half_decay(self, dt: float) -> torch.Tensor:
        """The integrating factor ``E = exp(L dt/2)`` ``[n or 1, 1, H, Wr]``."""
        if self._decay is None or self._decay[0] != dt:  # the automatic step rarely changes
            self._decay = (dt, self.grid.integrating_factor(self.diffusion, dt))
        return self._decay[1]

    def advance(self, duration: float, t: float) -> torch.Tensor:
        """Integrate ``duration`` time units (ending at time ``t``); returns the saved frame."""
        k = spectral.choose_substeps(self.system, self.courant_rate(), duration, t, self.params)
        dt = duration / k
        E = self.half_decay(dt)
        for _ in range(k):
            with nvtx_range(self.system.step_range):
                self.step(E, dt)
        frame = self.frame()
        self.system.check_finite_state(frame, self.params, t)
        return frame

    def step(self, E: torch.Tensor, dt: float) -> None:
        """One Lawson-RK4 step of ``state`` (4 x: to physical -> nonlinear term -> rfft2 -> fused stage)."""
        acc = self.state  # not read by stage 1
        for s in (1, 2, 3, 4):
            acc, nxt = self.stage(s, torch.fft.rfft2(self.nonlinear(self.phys)), acc, E, dt)
            self.phys = self.to_physical(nxt)
        self.state = acc
