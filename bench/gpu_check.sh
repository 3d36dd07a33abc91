#!/usr/bin/env bash
# The prepared GPU check (issue 14, item 7): on one H100/H200, in <= 8 minutes, build the package with its CUDA
# kernels for this device, run the gpu-marked tests (every CUDA/Triton backend against its torch reference), then
# every bench in its GPU mode (each picks CUDA when it is available), ending with dynadiff bench's table of every
# result beside its target. Run from a source checkout:   bash bench/gpu_check.sh [--dry-run]
# --dry-run prints the steps without running them (CI runs it that way, so the script stays valid).
set -euo pipefail
cd "$(dirname "$0")/.."
dry=${1:-}
run() { echo "+ $*"; [ "$dry" = "--dry-run" ] || "$@"; }
start=$(date +%s)

if [ "$dry" != "--dry-run" ]; then
  python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" || {
    echo "gpu_check: no CUDA device here (torch.cuda.is_available() is False)"; exit 2; }
  arch=$(python -c "import torch; print('%d%d' % torch.cuda.get_device_capability())")
else
  arch=90
fi
# the device's own architecture only: a quicker build than the default 80;90
run env DYNADIFF_CUDA=ON CMAKE_ARGS="-DCMAKE_CUDA_ARCHITECTURES=$arch" CMAKE_BUILD_PARALLEL_LEVEL=16 \
  python -m pip install -q --no-deps --no-build-isolation -e .
run dynadiff info
run timeout 180 python -m pytest -q -m gpu python_tests
run timeout 240 dynadiff bench --threads 1
echo "gpu_check: finished in $(( $(date +%s) - start )) s"
