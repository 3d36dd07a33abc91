// CPU kernel of the fused D2Q9 stream + collide step (pull scheme), OpenMP over environments x rows.
// The per-cell update is kernels/common/d2q9.h, the same code the CUDA kernel runs.
#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "common/d2q9.h"
#include "nvtx.h"
#include "parallel.h"
#include "registry.h"
#include "tensor_arg.h"

using dynadiff::TensorArg;
namespace lbm = dynadiff::d2q9;

namespace {

// Pulled populations of interior cell x; the bounce-back choice is a select between two loads.
inline void gather(float g[lbm::Q], const float* const src[], const float* const self[],
                   const uint8_t* const src_solid[], int x) {
  DD_UNROLL
  for (int i = 0; i < lbm::Q; ++i) {
    const float pulled = src[i][x], bounced = self[i][x];
    g[i] = src_solid[i][x] ? bounced : pulled;
  }
}

// Cells of row y with x in [1, W-2] whose 3x3 source rows are valid (periodic or interior rows): the
// pull is a fixed offset per population, so the loop is branch-light and vectorises over x. Same
// rules as d2q9::pull_index + cell_update (bounce-back from solid sources, rest state in solids).
// Loads are unconditional and the bounce-back choice a select, so the compiler if-converts the loop body.
template <int kCollision, bool kSmagorinsky>
void interior_row(const float* __restrict__ fin, float* __restrict__ fout, const uint8_t* __restrict__ solid,
                  int y, float omega, const lbm::StepArgs& a) {
  const int64_t plane = static_cast<int64_t>(a.H) * a.W;
  const float* src[lbm::Q];
  const float* self[lbm::Q];
  const uint8_t* src_solid[lbm::Q];
  DD_UNROLL  // (unrolled: the pointer arrays become registers, which the vectoriser needs)
  for (int i = 0; i < lbm::Q; ++i) {
    int ys = y - lbm::cy(i);
    ys = ys < 0 ? ys + a.H : (ys >= a.H ? ys - a.H : ys);  // only reached for y-periodic wrap-around
    src[i] = fin + i * plane + static_cast<int64_t>(ys) * a.W - lbm::cx(i);
    src_solid[i] = solid + static_cast<int64_t>(ys) * a.W - lbm::cx(i);
    self[i] = fin + lbm::opposite(i) * plane + static_cast<int64_t>(y) * a.W;
  }
  const uint8_t* solid_row = solid + static_cast<int64_t>(y) * a.W;
  float* out = fout + static_cast<int64_t>(y) * a.W;
  constexpr int kChunk = 64;
  for (int x0 = 1; x0 < a.W - 1; x0 += kChunk) {
    const int len = std::min(kChunk, a.W - 1 - x0);
    // With the Smagorinsky model the per-cell rate needs two square roots, whose libm errno path keeps
    // g++ from vectorising; they get their own scalar pass between two vectorised ones.
    float rate[kChunk], rho_buf[kChunk];
    if (kSmagorinsky) {
#pragma GCC ivdep
      for (int c = 0; c < len; ++c) {
        float g[lbm::Q], feq[lbm::Q], rho, ux, uy;
        gather(g, src, self, src_solid, x0 + c);
        lbm::moments(g, rho, ux, uy);
        DD_UNROLL
        for (int i = 0; i < lbm::Q; ++i) feq[i] = lbm::equilibrium(i, rho, ux, uy);
        rate[c] = lbm::nonequilibrium_flux2(g, feq);
        rho_buf[c] = rho;
      }
      for (int c = 0; c < len; ++c) rate[c] = lbm::smagorinsky_rate(rate[c], rho_buf[c], omega, a.smagorinsky2);
    }
#pragma GCC ivdep
    for (int c = 0; c < len; ++c) {
      float g[lbm::Q];
      gather(g, src, self, src_solid, x0 + c);
      lbm::collide<kCollision, false>(g, kSmagorinsky ? rate[c] : omega, a);
      DD_UNROLL
      for (int i = 0; i < lbm::Q; ++i) out[i * plane + x0 + c] = g[i];
    }
  }
  // Solid cells get the rest state in a second, scalar pass (a select in the loop above blocks vectorisation).
  for (int x = 1; x < a.W - 1; ++x)
    if (solid_row[x])
      for (int i = 0; i < lbm::Q; ++i) out[i * plane + x] = lbm::weight(i);
}

// One step for every environment: fin -> fout.
void step(const float* fin, float* fout, const uint8_t* solid, const float* omega, const float* u_in, int64_t n,
          const lbm::StepArgs& a) {
  const int64_t plane = static_cast<int64_t>(a.H) * a.W;
  const bool wrap_y = a.y_boundary == lbm::Y_PERIODIC;
#pragma omp parallel for collapse(2) schedule(static) if (n * plane >= dynadiff::kMinParallelWork)
  for (int64_t e = 0; e < n; ++e) {
    for (int y = 0; y < a.H; ++y) {
      const float w = omega[e];
      const float* fe = fin + e * lbm::Q * plane;
      float* fo = fout + e * lbm::Q * plane;
      const uint8_t* se = solid + e * plane;
      const float* ue = u_in + e * a.H;
      const bool fast = a.W >= 3 && (wrap_y || (y > 0 && y < a.H - 1));
      if (fast) {
        const bool les = a.smagorinsky2 > 0.0f;
        if (a.collision == lbm::BGK)
          les ? interior_row<lbm::BGK, true>(fe, fo, se, y, w, a) : interior_row<lbm::BGK, false>(fe, fo, se, y, w, a);
        else
          les ? interior_row<lbm::TRT, true>(fe, fo, se, y, w, a) : interior_row<lbm::TRT, false>(fe, fo, se, y, w, a);
        lbm::cell_update(fe, fo, se, ue, 0, y, w, a);
        lbm::cell_update(fe, fo, se, ue, a.W - 1, y, w, a);
      } else {
        for (int x = 0; x < a.W; ++x) lbm::cell_update(fe, fo, se, ue, x, y, w, a);
      }
    }
  }
}

}  // namespace

// Declared in tensor_arg.h (shared with the CUDA binding, csrc/lbm_step_cuda.cpp).
void dynadiff::check_lbm_step_args(const TensorArg& f, const TensorArg& out, const TensorArg& scratch,
                                   const TensorArg& solid, const TensorArg& omega, const TensorArg& u_in,
                                   int64_t steps) {
  f.check_dim(4, "f");
  const int64_t n = f.shape[0], H = f.shape[2], W = f.shape[3];
  f.check_shape({n, lbm::Q, H, W}, "f");
  out.check_shape({n, lbm::Q, H, W}, "out");
  solid.check_shape({n, H, W}, "solid");
  omega.check_shape({n}, "omega");
  u_in.check_shape({n, H}, "u_in");
  if (steps < 1) throw std::invalid_argument("steps: must be >= 1, got " + std::to_string(steps));
  if (steps > 1) scratch.check_shape({n, lbm::Q, H, W}, "scratch");
}

namespace {

// `steps` fused steps f -> out; `scratch` is the ping-pong buffer (unused when steps == 1). The
// first write goes to whichever buffer makes the last one land in `out`; `f` is never written.
void lbm_step_cpu(const TensorArg& f, const TensorArg& out, const TensorArg& scratch, const TensorArg& solid,
                  const TensorArg& omega, const TensorArg& u_in, int64_t steps, int64_t x_boundary,
                  int64_t y_boundary, int64_t collision, double magic, double smagorinsky) {
  DYNADIFF_NVTX_RANGE("kernel/lbm_step");
  dynadiff::check_lbm_step_args(f, out, scratch, solid, omega, u_in, steps);
  const int64_t n = f.shape[0], H = f.shape[2], W = f.shape[3];
  const lbm::StepArgs a{static_cast<int>(H), static_cast<int>(W), static_cast<int>(x_boundary),
                        static_cast<int>(y_boundary), static_cast<int>(collision), static_cast<float>(magic),
                        static_cast<float>(smagorinsky * smagorinsky)};
  const float* src = f.data<float>();
  float* bufs[2] = {out.data<float>(), scratch.data<float>()};
  for (int64_t s = 0; s < steps; ++s) {
    float* dst = bufs[(steps - 1 - s) % 2];
    step(src, dst, solid.data<uint8_t>(), omega.data<float>(), u_in.data<float>(), n, a);
    src = dst;
  }
}

}  // namespace

DYNADIFF_BIND(lbm_step_cpu) {
  m.def("lbm_step_cpu", &lbm_step_cpu,
        "Fused D2Q9 stream+collide (pull) steps: f [n,9,H,W] -> out, per-env omega [n] and solid mask [n,H,W]",
        pybind11::arg("f"), pybind11::arg("out"), pybind11::arg("scratch"), pybind11::arg("solid"),
        pybind11::arg("omega"), pybind11::arg("u_in"), pybind11::arg("steps"), pybind11::arg("x_boundary"),
        pybind11::arg("y_boundary"), pybind11::arg("collision"), pybind11::arg("magic"), pybind11::arg("smagorinsky"));
}
