// Host launcher of the spectral_mix CUDA kernel (kernels/spectral_mix.cu).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace dynadiff {

// y[e, b, o, m] = sum_i x[e, b, i, m] * w[e, i, o, m] for complex numbers stored as interleaved
// (re, im) pairs of float (double when `double_precision`); x [E, B, I, M], w [E, I, O, M],
// y [E, B, O, M], all contiguous on the device. One launch covers every expert.
void spectral_mix_cuda(const void* x, const void* w, void* y, int64_t E, int64_t B, int64_t I, int64_t O, int64_t M,
                       bool double_precision, cudaStream_t stream);

}  // namespace dynadiff
