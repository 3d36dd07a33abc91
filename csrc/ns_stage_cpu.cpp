// Fused pseudo-spectral stage ops on the CPU (OpenMP over spectral rows), complex interleaved data.
// Math: dynadiff_fast/ops/ns_stage/reference.py (Lawson RK4 stage + Poisson velocity spectra), one
// pass over memory instead of ~20 torch kernels.
#include <cstdint>
#include <stdexcept>
#include <string>

#include "nvtx.h"
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

// One Lawson-RK4 stage over all [n, F, H, Wr] modes. Batch strides of half_decay / forcing are 0
// when they are shared by every row.
template <typename T>
void ns_stage_impl(int stage, const T* q, const T* v, const T* acc, const T* decay, const T* kx, const T* ky,
                   const T* mask, T dt, const T* forcing, bool velocity, int64_t n, int64_t F, int64_t H,
                   int64_t Wr, int64_t decay_bstride, int64_t forcing_bstride, T* acc_out, T* out) {
  const int64_t plane = H * Wr;
  const T c2 = dt / 2, c3 = dt / 3, c6 = dt / 6;
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t b = 0; b < n * F; ++b) {
    for (int64_t h = 0; h < H; ++h) {
      const int64_t row = b / F, f = b % F;
      const int64_t base = b * plane + h * Wr;
      const T* E_row = decay + row * decay_bstride + h * Wr;
      const T* F_row = forcing ? forcing + 2 * (row * forcing_bstride + f * plane + h * Wr) : nullptr;
      const T* m_row = mask + h * Wr;
      const T kyh = ky[h];
      for (int64_t w = 0; w < Wr; ++w) {
        const int64_t i = base + w;
        const T E = E_row[w], m = m_row[w];
        Cplx<T> N = load(q, i);
        N.re *= m;
        N.im *= m;
        if (F_row) {
          N.re += F_row[2 * w];
          N.im += F_row[2 * w + 1];
        }
        const Cplx<T> s = load(v, i);
        T ar, ai, xr, xi;  // acc_out, next stage input
        if (stage == 1) {
          ar = E * E * (s.re + c6 * N.re);
          ai = E * E * (s.im + c6 * N.im);
          xr = E * (s.re + c2 * N.re);
          xi = E * (s.im + c2 * N.im);
        } else {
          const Cplx<T> a = load(acc, i);
          if (stage == 4) {
            ar = a.re + c6 * N.re;
            ai = a.im + c6 * N.im;
            xr = ar;
            xi = ai;
          } else {
            ar = a.re + c3 * E * N.re;
            ai = a.im + c3 * E * N.im;
            if (stage == 2) {
              xr = E * s.re + c2 * N.re;
              xi = E * s.im + c2 * N.im;
            } else {
              xr = E * (E * s.re + dt * N.re);
              xi = E * (E * s.im + dt * N.im);
            }
          }
        }
        store(acc_out, i, ar, ai);
        if (!velocity) {
          store(out, i, xr, xi);
          continue;
        }
        // (u, v, w_x, w_y) = (i ky psi, -i kx psi, i kx w, i ky w), psi = w / |k|^2 (F == 1 here).
        const T kxw = kx[w];
        const T k2 = kxw * kxw + kyh * kyh;
        const T inv = k2 > 0 ? T(1) / k2 : T(0);
        const T pr = xr * inv, pi = xi * inv;
        const int64_t o = row * 4 * plane + h * Wr + w;
        store(out, o, -kyh * pi, kyh * pr);
        store(out, o + plane, kxw * pi, -kxw * pr);
        store(out, o + 2 * plane, -kxw * xi, kxw * xr);
        store(out, o + 3 * plane, -kyh * xi, kyh * xr);
      }
    }
  }
}

// q = -(u w_x + v w_y) from fields [n, 4, P] (P = H * W grid points).
template <typename T>
void ns_advection_impl(const T* fields, T* q, int64_t n, int64_t P) {
#pragma omp parallel for schedule(static)
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

void check_same(const TensorArg& a, const TensorArg& b, const char* name) {
  if (a.shape != b.shape) throw std::invalid_argument(std::string(name) + ": shape differs from nonlin_hat");
}

// Complex tensors cross as their real views: [..., 2] float.
void ns_stage_cpu(int stage, const TensorArg& q, const TensorArg& v, const TensorArg& acc, const TensorArg& decay,
                  const TensorArg& kx, const TensorArg& ky, const TensorArg& mask, double dt,
                  const pybind11::object& forcing, bool velocity, const TensorArg& acc_out, const TensorArg& out,
                  bool fp64) {
  DYNADIFF_NVTX_RANGE("kernel/ns_stage");
  if (stage < 1 || stage > 4) throw std::invalid_argument("stage: must be 1..4, got " + std::to_string(stage));
  q.check_dim(5, "nonlin_hat");
  check_same(q, v, "state_hat");
  check_same(q, acc, "acc");
  check_same(q, acc_out, "acc_out");
  const int64_t n = q.shape[0], F = q.shape[1], H = q.shape[2], Wr = q.shape[3];
  decay.check_dim(4, "half_decay");
  if (decay.shape[2] != H || decay.shape[3] != Wr || (decay.shape[0] != 1 && decay.shape[0] != n))
    throw std::invalid_argument("half_decay: expected [n or 1, 1, H, Wr]");
  if (kx.numel() != Wr || ky.numel() != H || mask.numel() != H * Wr)
    throw std::invalid_argument("kx/ky/mask: sizes do not match the spectrum");
  const int64_t decay_bstride = decay.shape[0] == 1 ? 0 : H * Wr;
  const int64_t out_fields = velocity ? 4 : F;
  if (velocity && F != 1) throw std::invalid_argument("velocity: needs one field (vorticity)");
  if (out.numel() != n * out_fields * H * Wr * 2) throw std::invalid_argument("out: wrong size");
  int64_t forcing_bstride = 0;
  std::uintptr_t fptr = 0;
  if (!forcing.is_none()) {
    auto fa = forcing.cast<TensorArg>();
    if (fa.numel() != n * F * H * Wr * 2 && fa.numel() != F * H * Wr * 2)
      throw std::invalid_argument("forcing: expected [n or 1, F, H, Wr]");
    forcing_bstride = fa.shape[0] == 1 ? 0 : F * H * Wr;
    fptr = fa.ptr;
  }
  if (fp64) {
    ns_stage_impl<double>(stage, q.data<double>(), v.data<double>(), acc.data<double>(), decay.data<double>(),
                          kx.data<double>(), ky.data<double>(), mask.data<double>(), dt,
                          reinterpret_cast<const double*>(fptr), velocity, n, F, H, Wr, decay_bstride,
                          forcing_bstride, acc_out.data<double>(), out.data<double>());
  } else {
    ns_stage_impl<float>(stage, q.data<float>(), v.data<float>(), acc.data<float>(), decay.data<float>(),
                         kx.data<float>(), ky.data<float>(), mask.data<float>(), static_cast<float>(dt),
                         reinterpret_cast<const float*>(fptr), velocity, n, F, H, Wr, decay_bstride,
                         forcing_bstride, acc_out.data<float>(), out.data<float>());
  }
}

void ns_advection_cpu(const TensorArg& fields, const TensorArg& q, bool fp64) {
  DYNADIFF_NVTX_RANGE("kernel/ns_advection");
  fields.check_dim(4, "fields");
  if (fields.shape[1] != 4) throw std::invalid_argument("fields: expected [n, 4, H, W]");
  const int64_t n = fields.shape[0], P = fields.shape[2] * fields.shape[3];
  if (q.numel() != n * P) throw std::invalid_argument("out: expected [n, 1, H, W]");
  if (fp64)
    ns_advection_impl<double>(fields.data<double>(), q.data<double>(), n, P);
  else
    ns_advection_impl<float>(fields.data<float>(), q.data<float>(), n, P);
}

}  // namespace

DYNADIFF_BIND(ns_stage_cpu) {
  m.def("ns_stage_cpu", &ns_stage_cpu, "Fused Lawson-RK4 stage (+ velocity spectra) over complex interleaved data");
  m.def("ns_advection_cpu", &ns_advection_cpu, "q = -(u w_x + v w_y) from [n, 4, H, W] fields");
}
