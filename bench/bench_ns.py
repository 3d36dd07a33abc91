"""Pseudo-spectral NS / Kolmogorov step throughput: fused CPU path vs the torch reference, one run.

One integrating-factor RK4 step = 4 stages of (inverse FFT -> advection product -> rfft2 -> fused
stage). The torch backend is the plain reference (irfft2 of the four rfft half spectra u, v, w_x,
w_y, ~20 elementwise kernels per stage); the cpp backend runs the fused C++ stage and hands the
FFTs the packed layout (one forward complex FFT instead of four real inverse ones).

Prints grid-point-steps per second (batch x H x W / seconds per step), the cpp/torch ratio
measured in the same run (interleaved repeats, best of each), and next to each size the
bytes/FLOP model of one step and the H100 roofline estimate it implies.

    python bench/bench_ns.py                # 64^2 and 128^2, batch 64, one thread
    python bench/bench_ns.py --sizes 32 64 --batch 16 --repeats 5
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from dynadiff_fast.systems import get_system
from dynadiff_fast.systems.navier_stokes import _VorticitySolver

H100_BW = 3.35e12  # B/s HBM3
H100_FP32 = 67e12  # FLOP/s, CUDA cores


def step_model(n: int, N: int) -> tuple[float, float]:
    """(bytes, FLOPs) of one RK4 step on ``n`` fields of ``N x N`` in float32 (4 stages).

    Per stage and grid point: five real-field FFTs (~2.5 log2(N^2) FLOPs per point each, reading
    and writing their data once: 4 x (4 + 4) B in, 2 x 4 B out); the fused stage per half-spectrum
    mode (0.5 per point): reads q, v, acc (3 x 8 B) + E (4 B), writes acc (8 B) and four spectra
    (32 B), ~40 FLOPs; the advection product reads 4 x 4 B, writes 4 B, 3 FLOPs.
    """
    points = n * N * N
    fft_flops = 5 * 2.5 * math.log2(N * N)
    fft_bytes = 4 * 8 + 2 * 4
    stage_bytes = 0.5 * (3 * 8 + 4 + 8 + 32)
    per_stage_bytes = fft_bytes + stage_bytes + 20
    per_stage_flops = fft_flops + 0.5 * 40 + 3
    return 4 * per_stage_bytes * points, 4 * per_stage_flops * points


def time_step(system, params, backend: str, w0: torch.Tensor, steps: int, clock) -> float:
    """Seconds per RK4 step (mean over ``steps`` after one warm-up step)."""
    solver = _VorticitySolver(system, params, w0.device, backend, w0)
    dt = 0.2 * system.dt_frame
    E = solver.half_decay(dt)
    solver.step(E, dt)
    start = clock()
    for _ in range(steps):
        solver.step(E, dt)
    if w0.is_cuda:
        torch.cuda.synchronize()
    return (clock() - start) / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    ap.add_argument("--systems", nargs="+", default=["navier_stokes", "kolmogorov"])
    ap.add_argument("--steps", type=int, default=2, help="timed steps per repeat")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved repeats; the best is kept")
    ap.add_argument(
        "--clock",
        choices=["cpu", "wall"],
        default=None,
        help="cpu: process CPU time (robust on a shared machine; default with one thread on the CPU), wall: elapsed",
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    backends = ["torch", "cpp"] + (["triton"] if torch.cuda.is_available() else [])
    device = "cuda" if torch.cuda.is_available() else "cpu"
    use_cpu_clock = args.clock == "cpu" or (args.clock is None and args.threads == 1 and device == "cpu")
    clock = time.process_time if use_cpu_clock else time.perf_counter
    print(
        f"threads={args.threads} batch={args.batch} device={device} float32 clock={'cpu' if use_cpu_clock else 'wall'}; "
        "point-steps/s = batch*H*W / (seconds per step)"
    )
    for N in args.sizes:
        nbytes, flops = step_model(args.batch, N)
        roof = min(H100_BW / nbytes, H100_FP32 / flops) * args.batch * N * N
        print(
            f"-- {N}x{N}: model {nbytes / (args.batch * N * N):.0f} B and {flops / (args.batch * N * N):.0f} FLOP "
            f"per point-step (intensity {flops / nbytes:.2f} FLOP/B) -> H100 roofline "
            f"{roof:.2e} point-steps/s ({'memory' if H100_BW / nbytes < H100_FP32 / flops else 'compute'}-bound)"
        )
        for name in args.systems:
            system = get_system(name, resolution=N)
            lo, hi = (0.1, 0.3) if name == "navier_stokes" else (50.0, 250.0)
            params = torch.linspace(lo, hi, args.batch, dtype=torch.float64)[:, None]
            if name == "navier_stokes":
                params = torch.cat([params, torch.linspace(0, 1, args.batch, dtype=torch.float64)[:, None]], 1)
            w0 = system.random_initial(args.batch, seed=0, device=device)
            best = {b: math.inf for b in backends if not (b == "cpp" and device == "cuda")}
            for _ in range(args.repeats):
                for b in best:
                    best[b] = min(best[b], time_step(system, params, b, w0, args.steps, clock))
            rates = {b: args.batch * N * N / t for b, t in best.items()}
            line = "  ".join(f"{b} {rates[b]:.3e} ({best[b] * 1e3:.1f} ms/step)" for b in best)
            fused = "cpp" if "cpp" in rates else "triton"
            print(f"   {name:13s} {line}  | {fused}/torch = {rates[fused] / rates['torch']:.2f}x")


if __name__ == "__main__":
    main()
