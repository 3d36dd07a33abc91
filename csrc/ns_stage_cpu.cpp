// Fused pseudo-spectral stage ops on the CPU (OpenMP over spectral rows), complex interleaved data.
// Math: dynadiff_fast/ops/ns_stage/reference.py (Lawson RK4 stage + Poisson velocity spectra), one
// pass over memory instead of ~20 torch kernels.
#include <cstdint>
#include <stdexcept>
#include <string>

#include "nvtx.h"
#include "parallel.h"
#include "registry.h"
#include "tensor_arg.h"

namespace {

using dynadiff::TensorArg;

template <typename T>
struct Cplx {
  T re, im;
};

template <typename T>
inline Cplx<T> load(const T* p, int64_t i) {
  return {p[2 * i], p[2 * i + 1]};
}
template <typename T>
inline void store(T* p, int64_t i, T re, T im) {
  p[2 * i] = re;
  p[2 * i + 1] = im;
}

constexpr int64_t kMaxFields = 8;

// One Lawson-RK4 stage over all [n, F, H, Wr] modes. Batch strides of half_decay / forcing are 0
// when they are shared by every row. The C output fields (F stage inputs, or u, v, w_x, w_y) go to
// `out` as half spectra [n, C, H, Wr], or packed: pairs (a, b) as conj(a + i b) / (H W) on the full
// [n, C/2, H, W] grid, the mirror mode -k written from +k (X(-k) = conj X(k)).
template <typename T>
struct StageArgs {
  const T *q, *v, *acc, *decay, *kx, *ky, *mask;
  T dt;
  const T* forcing;  // nullptr: no forcing
  int64_t n, F, H, Wr, W, decay_bstride, forcing_bstride;
  T *acc_out, *out;
};

// Stage, velocity and layout are template parameters so each of the 16 variants compiles to a
// branch-free inner loop.
template <typename T, int STAGE, bool VELOCITY, bool PACKED>
void ns_stage_impl(const StageArgs<T>& args) {
  const auto [q, v, acc, decay, kx, ky, mask, dt, forcing, n, F, H, Wr, W, decay_bstride, forcing_bstride, acc_out,
              out] = args;
  const int64_t plane = H * Wr;
  const int64_t C = VELOCITY ? 4 : F;
  const int64_t out_plane = PACKED ? H * W : plane;
  const T c2 = dt / 2, c3 = dt / 3, c6 = dt / 6, scale = T(1) / T(H * W);
#pragma omp parallel for collapse(2) schedule(static) if (n * plane >= dynadiff::kMinParallelWork)
  for (int64_t row = 0; row < n; ++row) {
    for (int64_t h = 0; h < H; ++h) {
      const T* E_row = decay + row * decay_bstride + h * Wr;
      const T* m_row = mask + h * Wr;
      const T kyh = ky[h];
      const int64_t h_mirror = (H - h) % H;
      T* out_row = out + 2 * row * (PACKED ? C / 2 : C) * out_plane;
      for (int64_t w = 0; w < Wr; ++w) {
        const T E = E_row[w], m = m_row[w];
        Cplx<T> val[kMaxFields];  // the C output fields at this mode
        for (int64_t f = 0; f < F; ++f) {
          const int64_t i = (row * F + f) * plane + h * Wr + w;
          Cplx<T> N = load(q, i);
          N.re *= m;
          N.im *= m;
          if (forcing) {
            const int64_t fi = row * forcing_bstride + f * plane + h * Wr + w;
            N.re += forcing[2 * fi];
            N.im += forcing[2 * fi + 1];
          }
          const Cplx<T> s = load(v, i);
          T ar, ai, xr, xi;  // acc_out, next stage input
          if constexpr (STAGE == 1) {
            ar = E * E * (s.re + c6 * N.re);
            ai = E * E * (s.im + c6 * N.im);
            xr = E * (s.re + c2 * N.re);
            xi = E * (s.im + c2 * N.im);
          } else {
            const Cplx<T> a = load(acc, i);
            if constexpr (STAGE == 4) {
              ar = a.re + c6 * N.re;
              ai = a.im + c6 * N.im;
              xr = ar;
              xi = ai;
            } else {
              ar = a.re + c3 * E * N.re;
              ai = a.im + c3 * E * N.im;
              if constexpr (STAGE == 2) {
                xr = E * s.re + c2 * N.re;
                xi = E * s.im + c2 * N.im;
              } else {
                xr = E * (E * s.re + dt * N.re);
                xi = E * (E * s.im + dt * N.im);
              }
            }
          }
          store(acc_out, i, ar, ai);
          val[f] = {xr, xi};
        }
        if constexpr (VELOCITY) {
          // (u, v, w_x, w_y) = (i ky psi, -i kx psi, i kx w, i ky w), psi = w / |k|^2 (F == 1).
          const T xr = val[0].re, xi = val[0].im, kxw = kx[w];
          const T k2 = kxw * kxw + kyh * kyh;
          const T inv = k2 > 0 ? T(1) / k2 : T(0);
          const T pr = xr * inv, pi = xi * inv;
          val[0] = {-kyh * pi, kyh * pr};
          val[1] = {kxw * pi, -kxw * pr};
          val[2] = {-kxw * xi, kxw * xr};
          val[3] = {-kyh * xi, kyh * xr};
        }
        if constexpr (!PACKED) {
          for (int64_t c = 0; c < C; ++c) store(out_row, c * plane + h * Wr + w, val[c].re, val[c].im);
          continue;
        }
        const bool mirror = w > 0 && 2 * w < W;
        for (int64_t p = 0; p < C / 2; ++p) {
          const Cplx<T> a = val[2 * p], b = val[2 * p + 1];
          // +k: conj(a + i b) = (a.re - b.im) - i (a.im + b.re);  -k: conj(conj a + i conj b) = a - i b.
          store(out_row, p * out_plane + h * W + w, (a.re - b.im) * scale, -(a.im + b.re) * scale);
          if (mirror)
            store(out_row, p * out_plane + h_mirror * W + (W - w), (a.re + b.im) * scale, (a.im - b.re) * scale);
        }
      }
    }
  }
}

template <typename T, int STAGE>
void ns_stage_layout(bool velocity, bool packed, const StageArgs<T>& a) {
  if (velocity)
    packed ? ns_stage_impl<T, STAGE, true, true>(a) : ns_stage_impl<T, STAGE, true, false>(a);
  else
    packed ? ns_stage_impl<T, STAGE, false, true>(a) : ns_stage_impl<T, STAGE, false, false>(a);
}

template <typename T>
void ns_stage_dispatch(int stage, bool velocity, bool packed, const StageArgs<T>& a) {
  switch (stage) {
    case 1: return ns_stage_layout<T, 1>(velocity, packed, a);
    case 2: return ns_stage_layout<T, 2>(velocity, packed, a);
    case 3: return ns_stage_layout<T, 3>(velocity, packed, a);
    default: return ns_stage_layout<T, 4>(velocity, packed, a);
  }
}

// q = -(u w_x + v w_y) from fields [n, 4, P] (P = H * W grid points).
template <typename T>
void ns_advection_impl(const T* fields, T* q, int64_t n, int64_t P) {
#pragma omp parallel for schedule(static) if (n * P >= dynadiff::kMinParallelWork)
  for (int64_t r = 0; r < n; ++r) {
    const T* u = fields + r * 4 * P;
    const T* v = u + P;
    const T* wx = v + P;
    const T* wy = wx + P;
    T* o = q + r * P;
#pragma omp simd
    for (int64_t p = 0; p < P; ++p) o[p] = -(u[p] * wx[p] + v[p] * wy[p]);
  }
}

// Packed input: fields [n, 2, P] complex = (u - i v, w_x - i w_y); q = -(Re a Re b + Im a Im b).
template <typename T>
void ns_advection_packed_impl(const T* fields, T* q, int64_t n, int64_t P) {
#pragma omp parallel for schedule(static) if (n * P >= dynadiff::kMinParallelWork)
  for (int64_t r = 0; r < n; ++r) {
    const T* a = fields + r * 4 * P;
    const T* b = a + 2 * P;
    T* o = q + r * P;
#pragma omp simd
    for (int64_t p = 0; p < P; ++p) o[p] = -(a[2 * p] * b[2 * p] + a[2 * p + 1] * b[2 * p + 1]);
  }
}

void check_same(const TensorArg& a, const TensorArg& b, const char* name) {
  if (a.shape != b.shape) throw std::invalid_argument(std::string(name) + ": shape differs from nonlin_hat");
}

// Complex tensors cross as their real views: [..., 2] float.
void ns_stage_cpu(int stage, const TensorArg& q, const TensorArg& v, const TensorArg& acc, const TensorArg& decay,
                  const TensorArg& kx, const TensorArg& ky, const TensorArg& mask, double dt,
                  const pybind11::object& forcing, bool velocity, bool packed, int64_t width, const TensorArg& acc_out,
                  const TensorArg& out, bool fp64) {
  DYNADIFF_NVTX_RANGE("kernel/ns_stage");
  if (stage < 1 || stage > 4) throw std::invalid_argument("stage: must be 1..4, got " + std::to_string(stage));
  q.check_dim(5, "nonlin_hat");
  check_same(q, v, "state_hat");
  check_same(q, acc, "acc");
  check_same(q, acc_out, "acc_out");
  const int64_t n = q.shape[0], F = q.shape[1], H = q.shape[2], Wr = q.shape[3];
  if (F > kMaxFields) throw std::invalid_argument("nonlin_hat: at most 8 fields");
  if (width / 2 + 1 != Wr) throw std::invalid_argument("width: W // 2 + 1 must equal the spectrum's last size");
  decay.check_dim(4, "half_decay");
  if (decay.shape[2] != H || decay.shape[3] != Wr || (decay.shape[0] != 1 && decay.shape[0] != n))
    throw std::invalid_argument("half_decay: expected [n or 1, 1, H, Wr]");
  if (kx.numel() != Wr || ky.numel() != H || mask.numel() != H * Wr)
    throw std::invalid_argument("kx/ky/mask: sizes do not match the spectrum");
  const int64_t decay_bstride = decay.shape[0] == 1 ? 0 : H * Wr;
  const int64_t C = velocity ? 4 : F;
  if (velocity && F != 1) throw std::invalid_argument("velocity: needs one field (vorticity)");
  if (packed && C % 2) throw std::invalid_argument("layout: packed needs an even number of output fields");
  const int64_t out_numel = packed ? n * (C / 2) * H * width * 2 : n * C * H * Wr * 2;
  if (out.numel() != out_numel) throw std::invalid_argument("out: wrong size");
  int64_t forcing_bstride = 0;
  std::uintptr_t fptr = 0;
  if (!forcing.is_none()) {
    auto fa = forcing.cast<TensorArg>();
    if (fa.numel() != n * F * H * Wr * 2 && fa.numel() != F * H * Wr * 2)
      throw std::invalid_argument("forcing: expected [n or 1, F, H, Wr]");
    forcing_bstride = fa.shape[0] == 1 ? 0 : F * H * Wr;
    fptr = fa.ptr;
  }
  auto run = [&](auto zero) {
    using T = decltype(zero);
    const StageArgs<T> a{q.data<T>(), v.data<T>(), acc.data<T>(), decay.data<T>(), kx.data<T>(), ky.data<T>(),
                         mask.data<T>(), static_cast<T>(dt), reinterpret_cast<const T*>(fptr), n, F, H, Wr, width,
                         decay_bstride, forcing_bstride, acc_out.data<T>(), out.data<T>()};
    ns_stage_dispatch<T>(stage, velocity, packed, a);
  };
  if (fp64)
    run(0.0);
  else
    run(0.0f);
}

// fields: real [n, 4, H, W] (u, v, w_x, w_y), or the complex [n, 2, H, W] packed form as its real view.
void ns_advection_cpu(const TensorArg& fields, const TensorArg& q, bool packed, bool fp64) {
  DYNADIFF_NVTX_RANGE("kernel/ns_advection");
  const int64_t n = fields.shape[0];
  if (packed) {
    fields.check_dim(5, "fields");
    if (fields.shape[1] != 2) throw std::invalid_argument("fields: expected complex [n, 2, H, W]");
  } else {
    fields.check_dim(4, "fields");
    if (fields.shape[1] != 4) throw std::invalid_argument("fields: expected [n, 4, H, W]");
  }
  const int64_t P = fields.shape[2] * fields.shape[3];
  if (q.numel() != n * P) throw std::invalid_argument("out: expected [n, 1, H, W]");
  if (packed && fp64)
    ns_advection_packed_impl<double>(fields.data<double>(), q.data<double>(), n, P);
  else if (packed)
    ns_advection_packed_impl<float>(fields.data<float>(), q.data<float>(), n, P);
  else if (fp64)
    ns_advection_impl<double>(fields.data<double>(), q.data<double>(), n, P);
  else
    ns_advection_impl<float>(fields.data<float>(), q.data<float>(), n, P);
}

}  // namespace

DYNADIFF_BIND(ns_stage_cpu) {
  m.def("ns_stage_cpu", &ns_stage_cpu, "Fused Lawson-RK4 stage (+ velocity spectra) over complex interleaved data");
  m.def("ns_advection_cpu", &ns_advection_cpu, "q = -(u w_x + v w_y) from real [n, 4, H, W] or packed complex [n, 2, H, W] fields");
}
