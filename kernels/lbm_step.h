// Host launcher of the fused D2Q9 stream + collide CUDA kernel (kernels/lbm_step.cu).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace dynadiff {

// `steps` fused pull steps f -> out for n environments of [9, H, W] float32 populations, ping-ponging
// through `scratch` (unused when steps == 1; `f` is never written). solid: [n, H, W] uint8,
// omega: [n] float32, u_in: [n, H] float32; boundary/collision codes as in common/d2q9.h; magic: TRT
// Lambda; smagorinsky: the Smagorinsky constant C (0 = off).
void lbm_step_cuda(const float* f, float* out, float* scratch, const uint8_t* solid, const float* omega,
                   const float* u_in, int64_t n, int H, int W, int64_t steps, int x_boundary, int y_boundary,
                   int collision, float magic, float smagorinsky, cudaStream_t stream);

}  // namespace dynadiff
