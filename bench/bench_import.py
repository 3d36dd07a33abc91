"""Import cost of ``import dynadiff_fast`` on top of ``import torch`` (target: < 0.5 s).

Each figure is the median over fresh interpreters, measured in this run.
"""

import argparse
import statistics
import subprocess
import sys

from dynadiff_fast.stages.bench import report


def _time(code: str, repeats: int) -> float:
    prog = f"import time; t = time.perf_counter(); {code}; print(time.perf_counter() - t)"
    runs = [float(subprocess.check_output([sys.executable, "-c", prog], text=True)) for _ in range(repeats)]
    return statistics.median(runs)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    subprocess.check_call([sys.executable, "-c", "import torch, dynadiff_fast"])  # warm the file cache
    torch_only = _time("import torch", args.repeats)
    both = _time("import torch; import dynadiff_fast; dynadiff_fast.__version__", args.repeats)
    print(f"import torch                 : {torch_only:.3f} s (median of {args.repeats})")
    print(f"import torch + dynadiff_fast : {both:.3f} s")
    print(f"added by dynadiff_fast       : {both - torch_only:.3f} s")
    report("import time added by dynadiff_fast", both - torch_only, 0.5, higher=False, unit=" s")


if __name__ == "__main__":
    main()
