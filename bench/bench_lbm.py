"""lbm_step: fused C++ D2Q9 stream+collide vs the roll-based torch reference, in MLUPS (million lattice-cell
updates per second), measured in the same run (best of --reps, interleaved), one thread by default. Times are
the process's CPU time (``time.process_time``): with one thread that is the wall time on an idle core, and
it stays meaningful on a shared machine.

    python bench/bench_lbm.py [--threads 1] [--reps 3] [--envs 16] [--simulate]

Case: 16 environments of 128 x 64 cells (the saved cylinder-flow grid at refine = 1), a cylinder per
environment, Zou-He inlet, zero-gradient outlet, free-slip walls; TRT, TRT + Smagorinsky (the
cylinder_flow default) and BGK. ``--simulate`` also times ``CylinderFlow`` at the recommended CPU
settings (refine 1: 16 environments x 20 frames incl. the burn-in).

Bytes model (pull scheme, FP32 storage): every cell update reads 9 populations and writes 9, 72 B, plus
~1 B of the solid mask (neighbours come from cache): 73 B/update. The H100 roofline is
3.35 TB/s / 73 B = 45.9 GLUPS; at ~250 FLOP/update (TRT) the 67 TFLOP/s FP32 bound is ~270 GLUPS, so the
kernel is memory bound on the GPU.
"""

from __future__ import annotations

import argparse
import time

import torch

from dynadiff_fast.ops.lbm_step import OP, equilibrium, lbm_step
from dynadiff_fast.stages.bench import report

HBM = 3.35e12
BYTES_PER_UPDATE = 2 * 9 * 4 + 1
FLOP_PER_UPDATE = 250


def make_case(n: int, h: int, w: int):
    """Uniform flow past per-environment cylinders (radius 4..8 cells), omega in [1.9, 1.99]."""
    gen = torch.Generator().manual_seed(0)
    y = torch.arange(h, dtype=torch.float32)[:, None] + 0.5 - h / 2
    x = torch.arange(w, dtype=torch.float32)[None, :] + 0.5 - w / 4
    radius = 4 + 4 * torch.rand(n, generator=gen)
    solid = (y**2 + x**2)[None] <= radius[:, None, None] ** 2
    u = torch.where(solid, 0.0, 0.04)
    f = equilibrium(torch.ones(n, h, w), u, torch.zeros(n, h, w))
    omega = 1.9 + 0.09 * torch.rand(n, generator=gen)
    return f, omega, solid, torch.full((n, h), 0.04)


def best_times(fns: dict, reps: int) -> dict:
    best = {k: float("inf") for k in fns}
    for fn in fns.values():
        fn()  # warm-up
    for _ in range(reps):
        for k, fn in fns.items():
            t = time.process_time()
            fn()
            best[k] = min(best[k], time.process_time() - t)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--envs", type=int, default=16)
    ap.add_argument("--simulate", action="store_true", help="also time CylinderFlow at the CPU settings")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    n, h, w = args.envs, 64, 128
    f, omega, solid, u_in = make_case(n, h, w)
    cells = n * h * w
    print(f"lbm_step, {n} environments x {h}x{w}, float32, {args.threads} thread(s)")
    print(
        f"bytes model: {BYTES_PER_UPDATE} B/update -> H100 roofline {HBM / BYTES_PER_UPDATE / 1e6:,.0f} MLUPS "
        f"(FP32 compute bound ~{67e12 / FLOP_PER_UPDATE / 1e6:,.0f} MLUPS)"
    )
    has_cpp = OP.unavailable_reason("cpp", "cpu") is None
    torch_steps, cpp_steps = 4, 40
    for label, kw in (
        ("TRT", dict(collision="trt")),
        ("TRT + Smagorinsky 0.1", dict(collision="trt", smagorinsky=0.1)),
        ("BGK", dict(collision="bgk")),
    ):
        fns = {"torch": lambda kw=kw: lbm_step(f, omega, solid, u_in, steps=torch_steps, backend="torch", **kw)}
        if has_cpp:
            fns["cpp"] = lambda kw=kw: lbm_step(f, omega, solid, u_in, steps=cpp_steps, backend="cpp", **kw)
        t = best_times(fns, args.reps)
        mlups = {"torch": cells * torch_steps / t["torch"] / 1e6}
        if has_cpp:
            mlups["cpp"] = cells * cpp_steps / t["cpp"] / 1e6
        line = " | ".join(f"{k} {v:8.2f} MLUPS" for k, v in mlups.items())
        ratio = f"  cpp/torch {mlups['cpp'] / mlups['torch']:.1f}x" if has_cpp else "  (cpp backend not built)"
        cpp_bw = f", cpp moves {mlups.get('cpp', 0) * 1e6 * BYTES_PER_UPDATE / 1e9:.2f} GB/s" if has_cpp else ""
        print(f"{label:24s} {line}{ratio}{cpp_bw}")
        if has_cpp and label == "TRT":
            report(f"lbm_step cpp TRT, {h}x{w}, per thread", mlups["cpp"] / args.threads, 60.0, unit=" MLUPS")
    if args.simulate:
        time_simulate(n)


def time_simulate(n: int) -> None:
    from dynadiff_fast.systems.cylinder_flow import CylinderFlow

    s = CylinderFlow(refine=1)
    units = s.lattice_units(torch.tensor([[200.0, 10.0]]))
    params = torch.stack(
        torch.meshgrid(torch.linspace(200, 500, 4), torch.linspace(10, 25, n // 4), indexing="ij"), -1
    ).reshape(-1, 2)
    t = time.process_time()
    traj = s.simulate(params, n_frames=20, seed=0)
    dt = time.process_time() - t
    steps = int(units["burn_in_steps"]) + 20 * int(units["steps_per_frame"])
    print(
        f"CylinderFlow(refine=1): {len(params)} environments x 20 frames ({steps} LBM steps incl. burn-in "
        f"{int(units['burn_in_steps'])}) -> {tuple(traj.shape)} in {dt:.1f} s CPU "
        f"({len(params) * s.lattice_shape[0] * s.lattice_shape[1] * steps / dt / 1e6:.1f} MLUPS)"
    )


if __name__ == "__main__":
    main()
