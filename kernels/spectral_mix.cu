// spectral_mix on the GPU: one launch for all experts of a layer. Thread (e, q) with q = o * M + m
// owns output column y[e, :, o, m]; consecutive threads own consecutive q, so the weight loads
// w[e, i, o, m] (the dominant traffic, read exactly once per batch tile) and the output stores are
// fully coalesced, and x[e, b, i, m] (M values per row, shared by all O outputs) hits L1/L2.
// Bytes per call: 8|16 * (E*I*O*M + E*B*I*M + E*B*O*M); FLOPs: 8 * E*B*I*O*M -> memory bound
// (arithmetic intensity ~ B flop/byte in fp32, far below the H100's ~20).
#include <stdexcept>
#include <string>

#include "common/spectral_mix.h"
#include "cuda_check.h"
#include "cuda_runtime_info.h"
#include "nvtx.h"
#include "spectral_mix.h"

namespace dynadiff {
namespace {

constexpr int kThreads = 128;
constexpr int kBatchTile = 4;  // batch rows accumulated in registers per pass over i

template <typename T>
struct Pair;
template <>
struct Pair<float> {
  using type = float2;
};
template <>
struct Pair<double> {
  using type = double2;
};

template <typename T>
__global__ void spectral_mix_kernel(const typename Pair<T>::type* __restrict__ x,
                                    const typename Pair<T>::type* __restrict__ w, typename Pair<T>::type* __restrict__ y,
                                    int64_t B, int64_t I, int64_t O, int64_t M) {
  using T2 = typename Pair<T>::type;
  const int64_t e = blockIdx.x;
  const int64_t OM = O * M;
  const int64_t q = static_cast<int64_t>(blockIdx.y) * blockDim.x + threadIdx.x;
  if (q >= OM) return;
  const int64_t m = q % M;
  const T2* xe = x + e * B * I * M + m;
  const T2* we = w + e * I * OM + q;
  T2* ye = y + e * B * OM + q;
  for (int64_t b0 = 0; b0 < B; b0 += kBatchTile) {
    T ar[kBatchTile] = {}, ai[kBatchTile] = {};
    for (int64_t i = 0; i < I; ++i) {
      const T2 wv = we[i * OM];
#pragma unroll
      for (int t = 0; t < kBatchTile; ++t) {
        if (b0 + t < B) {
          const T2 xv = __ldg(xe + ((b0 + t) * I + i) * M);
          spectral_mix::cmac(ar[t], ai[t], xv.x, xv.y, wv.x, wv.y);
        }
      }
    }
#pragma unroll
    for (int t = 0; t < kBatchTile; ++t) {
      if (b0 + t < B) {
        T2 out;
        out.x = ar[t];
        out.y = ai[t];
        ye[(b0 + t) * OM] = out;
      }
    }
  }
}

template <typename T>
void launch(const void* x, const void* w, void* y, int64_t E, int64_t B, int64_t I, int64_t O, int64_t M,
            cudaStream_t stream) {
  using T2 = typename Pair<T>::type;
  const dim3 grid(static_cast<unsigned>(E), static_cast<unsigned>((O * M + kThreads - 1) / kThreads));
  spectral_mix_kernel<T><<<grid, kThreads, 0, stream>>>(static_cast<const T2*>(x), static_cast<const T2*>(w),
                                                        static_cast<T2*>(y), B, I, O, M);
  DYNADIFF_CUDA_CHECK(cudaGetLastError());
}

}  // namespace

void spectral_mix_cuda(const void* x, const void* w, void* y, int64_t E, int64_t B, int64_t I, int64_t O, int64_t M,
                       bool double_precision, cudaStream_t stream) {
  DYNADIFF_NVTX_RANGE("kernel/spectral_mix");
  require_cuda_device("spectral_mix");
  if (E == 0 || B == 0 || O == 0 || M == 0) return;
  if (E > 2147483647LL || (O * M + kThreads - 1) / kThreads > 65535)
    throw std::invalid_argument("spectral_mix: E <= 2^31-1 and O*M <= " + std::to_string(65535 * kThreads) +
                                " per call, got E=" + std::to_string(E) + ", O*M=" + std::to_string(O * M));
  if (double_precision)
    launch<double>(x, w, y, E, B, I, O, M, stream);
  else
    launch<float>(x, w, y, E, B, I, O, M, stream);
}

}  // namespace dynadiff
