"""Busy-machine robustness: how much a hot op slows down when one CPU-bound process runs beside it.

Each workload runs in a fresh Python process (the OpenMP runtime reads its wait policy when torch loads) with
torch's default thread count (every core), first alone, then beside one busy-loop process, under libgomp's
default wait policy (spin at barriers, then sleep) and under ``OMP_WAIT_POLICY=PASSIVE`` (what the ``dynadiff``
CLI sets unless the user chose one). Printed: seconds per repeat, quiet and busy, the quiet time against the
default policy's (what passive waiting costs on a quiet machine), and the busy / quiet ratio beside the target
(at most 2.5x).

    python bench/bench_busy.py                     # every workload, 5 repeats each
    python bench/bench_busy.py --workloads fno --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

from dynadiff_fast.stages.bench import report

TARGET = 2.5

# workload -> (setup, one repeat): bench_batched_fno.py case (a), a zoo-like fine-tuning step, and two frames
# of Kolmogorov flow at 64^2, batch 16 (the fused C++ stage and torch's FFTs)
WORKLOADS = {
    "fno": (
        "from dynadiff_fast.experts.configs import ExpertConfig\n"
        "from dynadiff_fast.experts.batched_fno import BatchedFNO\n"
        "cfg = ExpertConfig(in_channels=3, out_channels=3, hidden_channels=32, n_modes=(8, 8))\n"
        "torch.manual_seed(0)\n"
        "m = BatchedFNO.from_modules([cfg.build() for _ in range(16)]).eval()\n"
        "x = torch.randn(16, 4, 3, 64, 64)\n",
        "with torch.no_grad():\n    m(x)\n",
    ),
    "fno_train": (
        "from dynadiff_fast.experts.configs import ExpertConfig\n"
        "from dynadiff_fast.experts.batched_fno import BatchedFNO\n"
        "cfg = ExpertConfig(in_channels=3, out_channels=3, hidden_channels=16, n_modes=(8, 8))\n"
        "torch.manual_seed(0)\n"
        "m = BatchedFNO.from_modules([cfg.build() for _ in range(16)])\n"
        "opt = torch.optim.Adam(m.parameters(), 1e-3)\n"
        "x, y = torch.randn(16, 16, 3, 32, 32), torch.randn(16, 16, 3, 32, 32)\n",
        "opt.zero_grad()\n(m(x) - y).square().mean().backward()\nopt.step()\n",
    ),
    "ns_step": (
        "from dynadiff_fast.systems import get_system\n"
        "system = get_system('kolmogorov', resolution=64, dt_frame=0.05, burn_in=0.0)\n"
        "params = torch.full((16, 1), 100.0)\n",
        "system.simulate(params, n_frames=2)\n",
    ),
}

CHILD = """
import json, sys, time, torch
{setup}
def once():
{body}
once()  # warm-up
times = []
for _ in range({repeats}):
    t0 = time.perf_counter(); once(); times.append(time.perf_counter() - t0)
print(json.dumps(min(times)))
"""


def run_workload(name: str, repeats: int, policy: str | None, busy: bool) -> float:
    setup, body = WORKLOADS[name]
    code = CHILD.format(setup=setup, body="".join("    " + line + "\n" for line in body.splitlines()), repeats=repeats)
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    if policy is not None:
        env["OMP_WAIT_POLICY"] = policy
    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
    try:
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    finally:
        if burner is not None:
            burner.kill()
            burner.wait()
    return float(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=list(WORKLOADS))
    p.add_argument("--repeats", type=int, default=5)
    # dynadiff bench passes --threads to every script; this one measures the oversubscription a user meets, so its
    # workloads keep torch's default thread count whatever it says
    p.add_argument("--threads", type=int, default=None, help="not used: workloads run with torch's default count")
    args = p.parse_args()
    print(f"{os.cpu_count()} CPUs; torch's default thread count; one busy-loop process beside the busy runs")
    print(
        f"{'workload':<10} {'wait policy':<12} {'quiet s':>9} {'busy s':>9} {'quiet/default':>14} "
        f"{'busy/quiet':>11}  target <= {TARGET}x"
    )
    for name in args.workloads:
        reference = None
        for label, policy in (("default", None), ("PASSIVE", "PASSIVE")):
            quiet = run_workload(name, args.repeats, policy, busy=False)
            busy = run_workload(name, args.repeats, policy, busy=True)
            reference = reference or quiet
            ratio = busy / quiet
            print(f"{name:<10} {label:<12} {quiet:9.4f} {busy:9.4f} {quiet / reference:13.2f}x {ratio:10.2f}x")
            report(f"{name}, OpenMP {label}: busy / quiet", ratio, TARGET, higher=False)


if __name__ == "__main__":
    main()
