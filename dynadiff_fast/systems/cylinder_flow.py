"""Flow past a cylinder in a channel by the D2Q9 lattice Boltzmann method (App. B, Table 2; Li et al. 2025a).

Environment params ``(Re, r)``: Reynolds number and cylinder radius. Saved fields ``(u, v)`` on the
``height x width`` = 64 x 128 grid (x along the flow = W), normalised by the inflow velocity.

Lattice. The flow is solved on a lattice ``refine`` times finer than the saved grid (default 3: 192 x 384)
and block-averaged down (solid cells count as u = v = 0). ``r`` is measured in cells of the *reference*
lattice, ``REFERENCE_REFINE = 3`` times finer than the saved grid (the paper-scale lattice, where
``r in [10, 25]`` is a blockage D/H of 10-26 %), so the geometry is the same at every ``refine``: the
radius is ``r * refine / 3`` lattice cells. Time scales with the lattice too: ``frame_steps`` (the paper's
"dt = 200") and ``burn_in`` are reference-lattice steps, run as ``round(steps * refine / 3)`` steps.

Units. Inflow velocity ``U = u_inflow`` (lattice units, Mach ``U sqrt(3)``), diameter ``D = 2 r refine / 3``
cells, viscosity ``nu = U D / Re``, relaxation time ``tau = 3 nu + 1/2`` (per environment row). See
``lattice_units(params)`` for the numbers of a parameter set and ``check_stability`` for the limits:
``tau > 1/2 + tau_margin`` (collision stability of an under-resolved wake) and ``Mach <= max_mach``
(compressibility error ~ Ma^2).

Boundaries (``ops.lbm_step``): Zou-He velocity inlet ``(U, 0)`` at x = 0; zero-gradient outlet at x = W-1;
channel walls free-slip (specular reflection, default: no wall boundary layers, closest to the unbounded
wake), no-slip (bounce-back) or periodic; halfway bounce-back on the cylinder, whose mask is per environment. Collision TRT (Lambda = 1/4, default)
or BGK, with a Smagorinsky eddy viscosity (constant ``smagorinsky`` = 0.1; 0 turns it off). At the paper's
Re the near wake is under-resolved on coarse lattices (tau - 1/2 down to 0.0016 at refine 1, 0.0048 at
refine 3) and plain BGK/TRT blow up there (TRT did at tau - 1/2 = 0.004, D = 17 cells); the eddy
viscosity only acts where the non-equilibrium stress is large, i.e. at the grid scale.

Initial states and burn-in. ``random_initial`` gives the uniform inflow ``u = 1`` plus a smooth zero-mean
random perturbation of relative amplitude ``perturbation`` in both components (seeded); a given
``initial`` enters the lattice at equilibrium (rho = 1), each saved cell repeated ``refine x refine`` times. Without ``initial``,
``simulate`` starts from ``random_initial(n, seed)`` and runs ``burn_in`` steps first, so the recorded
frames show developed vortex shedding; the random perturbation breaks the up-down symmetry (triggering
shedding) and differs per row, which sets a different shedding phase per trajectory. Shedding is
developed after ~8,000 reference steps at Re 200 (slowest onset); the default burn-in is 20,000.

Cost. One LBM step updates ``n * 9 * H_lat * W_lat`` populations (73 B of memory traffic per cell).
CPU (one core, ``refine=1``): see ``bench/bench_lbm.py --simulate``; GPU: the ``cuda`` backend.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch
import torch.nn.functional as F

from dynadiff_fast.ops.lbm_step import COLLISIONS, Y_BOUNDARIES, equilibrium, lbm_step, macroscopic
from dynadiff_fast.profiling import nvtx_range
from dynadiff_fast.systems.base import SolverInstability, System

REFERENCE_REFINE = 3  # r and step counts are given on a lattice this many times finer than the saved grid
SOUND_SPEED = 3**-0.5  # D2Q9 lattice speed of sound c_s, in lattice units


@dataclasses.dataclass(frozen=True)
class CylinderFlow(System):
    """D2Q9 LBM cylinder flow; params ``(Re, r)``. Settings (see the module docstring for the units):

    width, height: saved grid (128 x 64). refine: lattice cells per saved cell along each axis.
    u_inflow: inflow velocity U in lattice units. frame_steps / burn_in: reference-lattice steps between
    frames / before frame 0 when ``initial`` is None. collision: "trt" | "bgk"; magic: TRT Lambda.
    walls: "free_slip" | "no_slip" | "periodic". center_x, center_y: cylinder centre as fractions of the
    channel length and height. perturbation: relative amplitude of ``random_initial``'s perturbation.
    smagorinsky: Smagorinsky constant C (0 = plain BGK/TRT). tau_margin: smallest allowed tau - 1/2 (with
    smagorinsky = 0 use >= 0.01). max_mach: largest allowed inflow Mach number U / c_s (0.15: ~2 %
    compressibility error).
    """

    name: ClassVar[str] = "cylinder_flow"
    param_names: ClassVar[tuple[str, ...]] = ("Re", "r")
    channel_names: ClassVar[tuple[str, ...]] = ("u", "v")
    initial_channels: ClassVar[tuple[str, ...]] = ("u", "v")

    width: int = 128
    height: int = 64
    refine: int = 3
    u_inflow: float = 0.04
    frame_steps: int = 200
    burn_in: int = 20000
    collision: str = "trt"
    magic: float = 0.25
    smagorinsky: float = 0.1
    walls: str = "free_slip"
    center_x: float = 0.25
    center_y: float = 0.5
    perturbation: float = 0.1
    tau_margin: float = 0.001
    max_mach: float = 0.15

    def __post_init__(self) -> None:
        for key in ("width", "height", "refine", "frame_steps"):
            value = getattr(self, key)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{self.name}: {key} must be an int >= 1, got {value!r}")
        if not isinstance(self.burn_in, int) or self.burn_in < 0:
            raise ValueError(f"{self.name}: burn_in must be an int >= 0, got {self.burn_in!r}")
        if self.width < 4 or self.height < 4:
            raise ValueError(f"{self.name}: the grid must be at least 4 x 4, got {self.height} x {self.width}")
        if not 0 < self.u_inflow < 0.5:
            raise ValueError(f"{self.name}: u_inflow must be in (0, 0.5) lattice units, got {self.u_inflow}")
        if self.collision not in COLLISIONS:
            raise ValueError(f"{self.name}: collision must be one of {COLLISIONS}, got {self.collision!r}")
        if self.walls not in Y_BOUNDARIES:
            raise ValueError(f"{self.name}: walls must be one of {Y_BOUNDARIES}, got {self.walls!r}")
        if not self.magic > 0:
            raise ValueError(f"{self.name}: magic (TRT Lambda) must be > 0, got {self.magic}")
        for key in ("center_x", "center_y"):
            if not 0 < getattr(self, key) < 1:
                raise ValueError(f"{self.name}: {key} must be a fraction in (0, 1), got {getattr(self, key)}")
        for key in ("perturbation", "tau_margin", "max_mach", "smagorinsky"):
            if not getattr(self, key) >= 0:
                raise ValueError(f"{self.name}: {key} must be >= 0, got {getattr(self, key)}")

    # ---- geometry and units ---------------------------------------------------------------------
    @property
    def dt_frame(self) -> float:
        """Reference-lattice LBM steps between saved frames (the paper's dt = 200)."""
        return float(self.frame_steps)

    @property
    def grid(self) -> tuple[int, int]:
        return (self.height, self.width)

    @property
    def domain(self) -> tuple[tuple[float, float], ...]:
        """In saved-grid cells."""
        return ((0.0, float(self.width)), (0.0, float(self.height)))

    @property
    def lattice_shape(self) -> tuple[int, int]:
        """``(H, W)`` of the LBM lattice."""
        return (self.height * self.refine, self.width * self.refine)

    def lattice_steps(self, reference_steps: int) -> int:
        """LBM steps on this lattice for ``reference_steps`` on the reference lattice (same physical time)."""
        if reference_steps == 0:
            return 0
        return max(1, round(reference_steps * self.refine / REFERENCE_REFINE))

    def lattice_units(self, params) -> dict[str, torch.Tensor]:
        """Per environment row (each ``[n]``, float64): ``tau``, ``omega`` (= 1/tau), ``tau_margin``
        (tau - 1/2), ``u_inflow`` (lattice), ``diameter`` (lattice cells), ``nu`` (lattice), ``mach``
        (U / c_s), ``steps_per_frame`` and ``burn_in_steps`` (LBM steps on this lattice)."""
        p = torch.as_tensor(params, dtype=torch.float64).reshape(-1, len(self.param_names))
        re, r = p[:, 0], p[:, 1]
        diameter = 2 * r * self.refine / REFERENCE_REFINE
        nu = self.u_inflow * diameter / re
        tau = 3 * nu + 0.5
        full = torch.full_like(re, 1.0)
        return {
            "tau": tau,
            "omega": 1 / tau,
            "tau_margin": tau - 0.5,
            "u_inflow": self.u_inflow * full,
            "diameter": diameter,
            "nu": nu,
            "mach": self.u_inflow / SOUND_SPEED * full,
            "steps_per_frame": self.lattice_steps(self.frame_steps) * full,
            "burn_in_steps": self.lattice_steps(self.burn_in) * full,
        }

    def check_stability(self, params: torch.Tensor) -> None:
        """Raise ``SolverInstability`` naming the first bad row: ``Re > 0``, a cylinder that fits the channel
        (radius >= 1 cell, >= 2 cells from the walls and the inlet), ``tau > 1/2 + tau_margin``,
        ``Mach <= max_mach``."""
        units = self.lattice_units(params)
        h, w = self.lattice_shape
        radius = units["diameter"] / 2
        cx, cy = self.center_x * w, self.center_y * h
        gap = torch.minimum(torch.minimum(cy - radius, h - cy - radius), cx - radius)
        checks = (
            (params[:, 0] > 0, "Re", params[:, 0], "must be > 0"),
            (radius >= 1, "cylinder radius (lattice cells)", radius, "must be >= 1 cell; raise refine or r"),
            (gap >= 2, "cylinder clearance (cells)", gap, "must be >= 2 cells to the walls and inlet; lower r"),
            (
                units["tau_margin"] > self.tau_margin,
                "tau - 1/2",
                units["tau_margin"],
                f"must be > tau_margin = {self.tau_margin:g}; raise u_inflow or refine, or lower Re",
            ),
            (
                units["mach"] <= self.max_mach,
                "Mach number",
                units["mach"],
                f"must be <= max_mach = {self.max_mach:g} (compressibility error ~ Ma^2); lower u_inflow",
            ),
        )
        for ok, what, value, limit in checks:
            if not bool(ok.all()):
                i = int((~ok).nonzero()[0])
                env = dict(zip(self.param_names, params[i].tolist()))
                raise SolverInstability(
                    f"{self.name}: environment row {i} ({env}): {what} = {float(value[i]):.6g} {limit}"
                )

    def solid_mask(self, params: torch.Tensor, device=None) -> torch.Tensor:
        """Cylinder masks ``[n, H_lat, W_lat]`` bool: lattice cells whose centre lies inside the circle."""
        h, w = self.lattice_shape
        radius = self.lattice_units(params)["diameter"].to(device) / 2
        y = torch.arange(h, dtype=torch.float64, device=device) + 0.5 - self.center_y * h
        x = torch.arange(w, dtype=torch.float64, device=device) + 0.5 - self.center_x * w
        dist2 = y[:, None] ** 2 + x[None, :] ** 2
        return dist2[None] <= radius[:, None, None] ** 2

    # ---- fields <-> lattice ---------------------------------------------------------------------
    def to_lattice(self, fields: torch.Tensor, solid: torch.Tensor) -> torch.Tensor:
        """Populations ``[n, 9, H_lat, W_lat]`` float32 at equilibrium (rho = 1) with the velocity of
        ``fields [n, 2, H, W]`` (normalised u, v; each saved cell repeated ``refine`` times per axis),
        at rest inside the solid."""
        k = self.refine
        vel = fields.to(torch.float32).repeat_interleave(k, dim=-2).repeat_interleave(k, dim=-1)
        vel = torch.where(solid[:, None], 0.0, vel * self.u_inflow)
        return equilibrium(torch.ones_like(vel[:, 0]), vel[:, 0], vel[:, 1])

    def observe(self, f: torch.Tensor) -> torch.Tensor:
        """Saved fields ``[n, 2, H, W]``: lattice velocity block-averaged over ``refine x refine`` cells,
        divided by the inflow velocity (solid cells store the rest state, so they count as 0)."""
        _, ux, uy = macroscopic(f)
        vel = torch.stack((ux, uy), dim=1)
        return F.avg_pool2d(vel, self.refine) / self.u_inflow

    # ---- simulation -----------------------------------------------------------------------------
    def random_initial(self, n: int, seed: int = 0, device=None) -> torch.Tensor:
        """``[n, 2, H, W]``: uniform inflow ``(1, 0)`` plus a smooth zero-mean Gaussian perturbation (noise on
        an 8x coarser grid, bilinearly upsampled) of standard deviation ``perturbation`` per component."""
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"{self.name}: n must be an int >= 1, got {n!r}")
        gen = torch.Generator().manual_seed(seed)
        coarse = torch.randn(n, 2, max(2, self.height // 8), max(2, self.width // 8), generator=gen)
        noise = F.interpolate(coarse, size=self.grid, mode="bilinear", align_corners=False)
        noise = noise - noise.mean(dim=(-2, -1), keepdim=True)  # zero mean: the mean flow is the inflow
        noise = noise / noise.std(dim=(-2, -1), keepdim=True).clamp_min(1e-12)
        fields = self.perturbation * noise
        fields[:, 0] += 1.0
        return fields.to(device=device)

    def simulate(self, params, initial=None, n_frames=10, seed=0, backend="auto", device=None) -> torch.Tensor:
        """One trajectory per row of ``params [n, 2]`` (Re, r): ``[n, n_frames + 1, 2, H, W]`` float32
        (u, v normalised by the inflow velocity). ``initial [n, 2, H, W]``, or None for
        ``random_initial(n, seed)`` followed by ``burn_in``."""
        p = self.validate_params(params)
        self.check_frames(n_frames)
        n = p.shape[0]
        if device is None:
            device = initial.device if isinstance(initial, torch.Tensor) else "cpu"
        if initial is None:
            initial, burn_in = self.random_initial(n, seed, device), self.lattice_steps(self.burn_in)
        else:
            initial, burn_in = self._check_initial(initial, n).to(device), 0
        units = self.lattice_units(p)
        solid = self.solid_mask(p, device)
        omega = units["omega"].to(device=device, dtype=torch.float32)
        u_in = torch.full((n, self.lattice_shape[0]), self.u_inflow, dtype=torch.float32, device=device)
        kw = dict(
            collision=self.collision,
            magic=self.magic,
            smagorinsky=self.smagorinsky,
            y_boundary=self.walls,
            backend=backend,
        )

        def advance(f: torch.Tensor, steps: int, t: int) -> torch.Tensor:
            with nvtx_range("sim/lbm_step"):
                f = lbm_step(f, omega, solid, u_in, steps=steps, **kw)
            self.check_finite_state(f, p, t + steps)
            return f

        f = self.to_lattice(initial, solid)
        t = 0
        chunk = max(1, self.lattice_steps(10 * self.frame_steps))  # check for NaN now and then while burning in
        while t < burn_in:
            steps = min(chunk, burn_in - t)
            f, t = advance(f, steps, t), t + steps
        per_frame = self.lattice_steps(self.frame_steps)
        frames = [self.observe(f)]
        for _ in range(n_frames):
            f, t = advance(f, per_frame, t), t + per_frame
            frames.append(self.observe(f))
        return torch.stack(frames, dim=1)

    def _check_initial(self, initial, n: int) -> torch.Tensor:
        x = torch.as_tensor(initial)
        expect = (n, len(self.initial_channels), *self.grid)
        if tuple(x.shape) != expect:
            raise ValueError(f"{self.name}: initial must have shape {expect} ([n, (u, v), H, W]), got {tuple(x.shape)}")
        if not bool(torch.isfinite(x).all()):
            raise ValueError(f"{self.name}: initial contains NaN/inf values")
        return x
