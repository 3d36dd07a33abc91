// CPU kernel of spectral_mix: y[e, b, o, m] = sum_i x[e, b, i, m] * w[e, i, o, m] (complex).
//
// Layout: complex numbers as interleaved (re, im) float/double pairs, modes m innermost. Per expert e
// the input x[e] is de-interleaved once into planar [B][I][re|im][Mp] (reused for every o); per task
// a block of kOT outputs has its weight rows w[e, :, o, :] read exactly once into a planar buffer;
// then a register tile (kOT outputs x one vector of modes, re and im) sums over i with planar multiply-adds
// (vectorised; an AVX2/FMA clone is picked at run time on CPUs that have it). OpenMP splits the
// (expert, output block) tasks.
#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/spectral_mix.h"
#include "nvtx.h"
#include "parallel.h"
#include "registry.h"
#include "tensor_arg.h"

// Vector-extension values never cross a non-inlined call boundary: the ABI note does not apply.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wpsabi"
#endif
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define DD_SIMD_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define DD_SIMD_CLONES
#endif

using dynadiff::TensorArg;

namespace {

// Register tile: kOT outputs o x one 32-byte vector of modes (8 floats / 4 doubles), re and im,
// summed over i in registers. GCC/Clang vector extensions: 256-bit ops in the AVX2 clone, pairs of
// 128-bit ops in the baseline one.
constexpr int kOT = 4;
constexpr int kVecBytes = 32;

template <typename T>
struct Vec {
  typedef T type __attribute__((vector_size(kVecBytes)));
  static constexpr int64_t lanes = kVecBytes / sizeof(T);
  static inline __attribute__((always_inline)) type load(const T* p) {
    type v;
    __builtin_memcpy(&v, p, sizeof(v));
    return v;
  }
};

struct Dims {
  int64_t E, B, I, O, M;
  int64_t Mp;  // M rounded up to whole vectors (planar buffers are zero-padded)
};

// rows of M interleaved complex -> rows of [re: Mp][im: Mp] planar (padding left at zero).
template <typename T>
inline void to_planar(const T* __restrict__ src, T* __restrict__ dst, int64_t rows, int64_t M, int64_t Mp,
                      int64_t src_stride, int64_t dst_stride) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t m = 0; m < M; ++m) {
      dst[r * dst_stride + m] = src[r * src_stride + 2 * m];
      dst[r * dst_stride + Mp + m] = src[r * src_stride + 2 * m + 1];
    }
}

// y[b, o0 + t, :] for t < n_o and all b: xp planar [B][I][2][Mp], wp planar [I][kOT][2][Mp].
template <typename T>
inline __attribute__((always_inline)) void mix_tile(const T* __restrict__ xp, const T* __restrict__ wp,
                                                    T* __restrict__ y, const Dims& d, int64_t o0, int64_t n_o) {
  using V = Vec<T>;
  using VT = typename V::type;
  const int64_t I = d.I, Mp = d.Mp;
  for (int64_t b = 0; b < d.B; ++b) {
    for (int64_t mc = 0; mc < Mp; mc += V::lanes) {
      VT ar[kOT] = {}, ai[kOT] = {};
      for (int64_t i = 0; i < I; ++i) {
        const T* xrow = xp + (b * I + i) * 2 * Mp + mc;
        const VT xr = V::load(xrow), xi = V::load(xrow + Mp);
        for (int t = 0; t < kOT; ++t) {
          const T* wrow = wp + (i * kOT + t) * 2 * Mp + mc;
          dynadiff::spectral_mix::cmac(ar[t], ai[t], xr, xi, V::load(wrow), V::load(wrow + Mp));
        }
      }
      const int64_t nv = std::min<int64_t>(V::lanes, d.M - mc);
      for (int64_t t = 0; t < n_o; ++t) {
        T* out = y + ((b * d.O + o0 + t) * d.M + mc) * 2;
        for (int64_t v = 0; v < nv; ++v) {
          out[2 * v] = ar[t][v];
          out[2 * v + 1] = ai[t][v];
        }
      }
    }
  }
}

DD_SIMD_CLONES void mix_tile_f32(const float* xp, const float* wp, float* y, const Dims& d, int64_t o0, int64_t n_o) {
  mix_tile(xp, wp, y, d, o0, n_o);
}
DD_SIMD_CLONES void mix_tile_f64(const double* xp, const double* wp, double* y, const Dims& d, int64_t o0,
                                 int64_t n_o) {
  mix_tile(xp, wp, y, d, o0, n_o);
}
inline void mix_tile_any(const float* xp, const float* wp, float* y, const Dims& d, int64_t o0, int64_t n_o) {
  mix_tile_f32(xp, wp, y, d, o0, n_o);
}
inline void mix_tile_any(const double* xp, const double* wp, double* y, const Dims& d, int64_t o0, int64_t n_o) {
  mix_tile_f64(xp, wp, y, d, o0, n_o);
}

// Tasks are (expert e, block of kOT outputs); each thread converts x[e] to planar once per expert it
// visits (static schedule: contiguous tasks) and the block's weight rows once per task, so every
// weight element is read from memory exactly once.
template <typename T>
void spectral_mix(const T* x, const T* w, T* y, const Dims& d) {
  const int64_t n_blocks = (d.O + kOT - 1) / kOT;
  const int64_t tasks = d.E * n_blocks;
  const int64_t row = 2 * d.Mp;
#pragma omp parallel if (d.E * d.B * d.I * d.O * d.M >= dynadiff::kMinParallelWork)
  {
    std::vector<T> xp(d.B * d.I * row, T(0)), wp(d.I * kOT * row, T(0));
    int64_t planar_e = -1;
#pragma omp for schedule(static)
    for (int64_t t = 0; t < tasks; ++t) {
      const int64_t e = t / n_blocks, o0 = (t % n_blocks) * kOT, n_o = std::min<int64_t>(kOT, d.O - o0);
      if (e != planar_e) {
        to_planar(x + e * d.B * d.I * d.M * 2, xp.data(), d.B * d.I, d.M, d.Mp, 2 * d.M, row);
        planar_e = e;
      }
      const T* we = w + e * d.I * d.O * d.M * 2;
      if (n_o < kOT) std::fill(wp.begin(), wp.end(), T(0));
      for (int64_t i = 0; i < d.I; ++i)
        to_planar(we + (i * d.O + o0) * d.M * 2, wp.data() + i * kOT * row, n_o, d.M, d.Mp, 2 * d.M, row);
      mix_tile_any(xp.data(), wp.data(), y + e * d.B * d.O * d.M * 2, d, o0, n_o);
    }
  }
}

template <typename T>
Dims padded(Dims d) {
  d.Mp = (d.M + Vec<T>::lanes - 1) / Vec<T>::lanes * Vec<T>::lanes;
  return d;
}

}  // namespace

// Declared in tensor_arg.h (shared with the CUDA binding, csrc/spectral_mix_cuda.cpp).
std::vector<int64_t> dynadiff::check_spectral_mix_args(const TensorArg& x, const TensorArg& w, const TensorArg& y) {
  x.check_dim(5, "x_ft");
  w.check_dim(5, "weight");
  const int64_t E = x.shape[0], B = x.shape[1], I = x.shape[2], M = x.shape[3], O = w.shape[2];
  x.check_shape({E, B, I, M, 2}, "x_ft");
  w.check_shape({E, I, O, M, 2}, "weight");
  y.check_shape({E, B, O, M, 2}, "out");
  return {E, B, I, O, M};
}

namespace {

void spectral_mix_cpu(const TensorArg& x, const TensorArg& w, const TensorArg& y, bool double_precision) {
  DYNADIFF_NVTX_RANGE("kernel/spectral_mix");
  const auto s = dynadiff::check_spectral_mix_args(x, w, y);
  const Dims d{s[0], s[1], s[2], s[3], s[4], 0};
  if (d.E * d.B * d.O * d.M == 0) return;
  if (double_precision)
    spectral_mix(x.data<double>(), w.data<double>(), y.data<double>(), padded<double>(d));
  else
    spectral_mix(x.data<float>(), w.data<float>(), y.data<float>(), padded<float>(d));
}

}  // namespace

DYNADIFF_BIND(spectral_mix_cpu) {
  m.def("spectral_mix_cpu", &spectral_mix_cpu,
        "y[e,b,o,m] = sum_i x[e,b,i,m] * w[e,i,o,m] on complex numbers stored as (re, im) pairs; x [E,B,I,M,2], "
        "w [E,I,O,M,2], y [E,B,O,M,2] contiguous float32 (or float64 when double_precision)",
        pybind11::arg("x_ft"), pybind11::arg("weight"), pybind11::arg("out"), pybind11::arg("double_precision"));
}
