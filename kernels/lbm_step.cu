// Fused D2Q9 stream + collide (pull scheme), one thread per cell, one grid row of blocks per
// environment. The per-cell update is kernels/common/d2q9.h, shared with the CPU kernel.
// Memory traffic per cell update: 9 float loads + 9 float stores + <= 9 mask bytes (cached).
#include <stdexcept>
#include <string>

#include "common/d2q9.h"
#include "cuda_check.h"
#include "cuda_runtime_info.h"
#include "lbm_step.h"
#include "nvtx.h"

namespace dynadiff {
namespace {

constexpr int kThreads = 256;

__global__ void lbm_step_kernel(const float* __restrict__ fin, float* __restrict__ fout,
                                const uint8_t* __restrict__ solid, const float* __restrict__ omega,
                                const float* __restrict__ u_in, d2q9::StepArgs a) {
  const int64_t plane = static_cast<int64_t>(a.H) * a.W;
  const int64_t cell = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (cell >= plane) return;
  const int64_t e = blockIdx.y;
  d2q9::cell_update(fin + e * d2q9::Q * plane, fout + e * d2q9::Q * plane, solid + e * plane, u_in + e * a.H,
                    static_cast<int>(cell % a.W), static_cast<int>(cell / a.W), omega[e], a);
}

}  // namespace

void lbm_step_cuda(const float* f, float* out, float* scratch, const uint8_t* solid, const float* omega,
                   const float* u_in, int64_t n, int H, int W, int64_t steps, int x_boundary, int y_boundary,
                   int collision, float magic, float smagorinsky, cudaStream_t stream) {
  DYNADIFF_NVTX_RANGE("kernel/lbm_step");
  require_cuda_device("lbm_step");
  if (n == 0 || H == 0 || W == 0) return;
  if (n > 65535) throw std::invalid_argument("lbm_step: at most 65535 environments per call, got " + std::to_string(n));
  const d2q9::StepArgs a{H, W, x_boundary, y_boundary, collision, magic, smagorinsky * smagorinsky};
  const int64_t plane = static_cast<int64_t>(H) * W;
  const dim3 grid(static_cast<unsigned>((plane + kThreads - 1) / kThreads), static_cast<unsigned>(n));
  const float* src = f;
  float* bufs[2] = {out, scratch};
  for (int64_t s = 0; s < steps; ++s) {
    float* dst = bufs[(steps - 1 - s) % 2];
    lbm_step_kernel<<<grid, kThreads, 0, stream>>>(src, dst, solid, omega, u_in, a);
    DYNADIFF_CUDA_CHECK(cudaGetLastError());
    src = dst;
  }
}

}  // namespace dynadiff
