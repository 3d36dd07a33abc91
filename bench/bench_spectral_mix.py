"""spectral_mix: GFLOP/s of each backend and its speed-up over torch.einsum, measured in one run,
with the bytes model and what it implies on an H100.

    python bench/bench_spectral_mix.py [--threads 1] [--reps 5]

FLOPs per call: 8 * E*B*I*O*M (complex multiply-add = 8 real flops). Bytes (complex64, each
operand touched once): 8 * (E*I*O*M + E*B*I*M + E*B*O*M). Arithmetic intensity ~ B*I*O / (I*O +
B*(I+O)) ~ B flop/byte, far below the H100's fp32 ridge (~67 TFLOP/s / 3.35 TB/s = 20 flop/byte):
on the GPU the op is memory bound and its time is ~bytes / 3.35 TB/s.
"""

from __future__ import annotations

import argparse
import time

import torch

from dynadiff_fast.ops.spectral_mix import OP, spectral_mix

HBM = 3.35e12  # H100 SXM HBM3 bytes/s
FP32 = 67e12  # H100 fp32 CUDA-core FLOP/s

# (name, E, B, I=O, modes): the FNO layers BatchedFNO runs.
CASES = [
    ("bench (a) E16 B4 w32 8x8", 16, 4, 32, (8, 5)),
    ("bench (b) cylinder w64 12x6", 8, 2, 64, (12, 4)),
    ("bench (c) E256 B1 w16 8x8", 256, 1, 16, (8, 5)),
    ("paper NS zoo chunk E64 B4 w64", 64, 4, 64, (8, 5)),
]


def timeit(fn, reps: int) -> float:
    fn()
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    backends = [b for b in OP.usable(device) if not (b == "triton" and device == "cpu")]
    print(f"spectral_mix, complex64, {device}, {args.threads} thread(s); backends {backends}")
    for case in CASES:
        run_case(*case, backends=backends, device=device, reps=args.reps)


def run_case(name: str, E: int, B: int, C: int, modes: tuple[int, int], backends, device: str, reps: int) -> None:
    M = modes[0] * modes[1]
    x = torch.randn(E, B, C, *modes, dtype=torch.complex64, device=device)
    w = torch.randn(E, C, C, *modes, dtype=torch.complex64, device=device)
    flops = 8 * E * B * C * C * M
    nbytes = 8 * (E * C * C * M + E * B * C * M + E * B * C * M)

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    t_ref = timeit(lambda: (torch.einsum("ebi...,eio...->ebo...", x, w), sync()), reps)
    row = [f"einsum {flops / t_ref / 1e9:6.2f} GFLOP/s"]
    for b in backends:
        t = timeit(lambda b=b: (spectral_mix(x, w, backend=b), sync()), reps)
        row.append(f"{b} {flops / t / 1e9:6.2f} GFLOP/s ({t_ref / t:4.2f}x einsum)")
    h100 = max(nbytes / HBM, flops / FP32)
    print(f"{name:32s} {' | '.join(row)}")
    print(
        f"{'':32s} model: {flops / 1e6:.1f} MFLOP, {nbytes / 1e6:.2f} MB, {flops / nbytes:.1f} flop/byte "
        f"-> H100 roofline {h100 * 1e6:.1f} us (memory bound: {nbytes / HBM >= flops / FP32})"
    )


if __name__ == "__main__":
    main()
