// CPU kernel of the fused D2Q9 stream + collide step (pull scheme), OpenMP over environments x rows.
// The per-cell update is kernels/common/d2q9.h, the same code the CUDA kernel runs.
#include <cstdint>
#include <stdexcept>
#include <string>

#include "common/d2q9.h"
#include "nvtx.h"
#include "registry.h"
#include "tensor_arg.h"

namespace dynadiff {
void check_lbm_step_args(const TensorArg& f, const TensorArg& out, const TensorArg& scratch, const TensorArg& solid,
                         const TensorArg& omega, const TensorArg& u_in, int64_t steps);
}  // namespace dynadiff

using dynadiff::TensorArg;
namespace lbm = dynadiff::d2q9;

namespace {

void check_shape(const TensorArg& t, const char* name, std::initializer_list<int64_t> shape) {
  t.check_dim(static_cast<int64_t>(shape.size()), name);
  t.check_contiguous(name);
  int64_t d = 0;
  for (int64_t s : shape) {
    if (t.shape[d] != s)
      throw std::invalid_argument(std::string(name) + ": dim " + std::to_string(d) + " is " +
                                  std::to_string(t.shape[d]) + ", expected " + std::to_string(s));
    ++d;
  }
}

// One step for every environment: fin -> fout.
void step(const float* fin, float* fout, const uint8_t* solid, const float* omega, const float* u_in, int64_t n,
          const lbm::StepArgs& a, float magic) {
  const int64_t plane = static_cast<int64_t>(a.H) * a.W;
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t e = 0; e < n; ++e) {
    for (int y = 0; y < a.H; ++y) {
      const float w = omega[e];
      const float wm = lbm::trt_omega_minus(w, magic);
      const float* fe = fin + e * lbm::Q * plane;
      float* fo = fout + e * lbm::Q * plane;
      const uint8_t* se = solid + e * plane;
      const float* ue = u_in + e * a.H;
      for (int x = 0; x < a.W; ++x) lbm::cell_update(fe, fo, se, ue, x, y, w, wm, a);
    }
  }
}

}  // namespace

// Shapes of the lbm_step arguments (shared with the CUDA binding, csrc/lbm_step_cuda.cpp).
void dynadiff::check_lbm_step_args(const TensorArg& f, const TensorArg& out, const TensorArg& scratch,
                                   const TensorArg& solid, const TensorArg& omega, const TensorArg& u_in,
                                   int64_t steps) {
  f.check_dim(4, "f");
  const int64_t n = f.shape[0], H = f.shape[2], W = f.shape[3];
  check_shape(f, "f", {n, lbm::Q, H, W});
  check_shape(out, "out", {n, lbm::Q, H, W});
  check_shape(solid, "solid", {n, H, W});
  check_shape(omega, "omega", {n});
  check_shape(u_in, "u_in", {n, H});
  if (steps < 1) throw std::invalid_argument("steps: must be >= 1, got " + std::to_string(steps));
  if (steps > 1) check_shape(scratch, "scratch", {n, lbm::Q, H, W});
}

namespace {

// `steps` fused steps f -> out; `scratch` is the ping-pong buffer (unused when steps == 1). The
// first write goes to whichever buffer makes the last one land in `out`; `f` is never written.
void lbm_step_cpu(const TensorArg& f, const TensorArg& out, const TensorArg& scratch, const TensorArg& solid,
                  const TensorArg& omega, const TensorArg& u_in, int64_t steps, int64_t x_boundary,
                  int64_t y_boundary, int64_t collision, double magic) {
  DYNADIFF_NVTX_RANGE("kernel/lbm_step");
  dynadiff::check_lbm_step_args(f, out, scratch, solid, omega, u_in, steps);
  const int64_t n = f.shape[0], H = f.shape[2], W = f.shape[3];
  const lbm::StepArgs a{static_cast<int>(H), static_cast<int>(W), static_cast<int>(x_boundary),
                        static_cast<int>(y_boundary), static_cast<int>(collision)};
  const float* src = f.data<float>();
  float* bufs[2] = {out.data<float>(), scratch.data<float>()};
  for (int64_t s = 0; s < steps; ++s) {
    float* dst = bufs[(steps - 1 - s) % 2];
    step(src, dst, solid.data<uint8_t>(), omega.data<float>(), u_in.data<float>(), n, a, static_cast<float>(magic));
    src = dst;
  }
}

}  // namespace

DYNADIFF_BIND(lbm_step_cpu) {
  m.def("lbm_step_cpu", &lbm_step_cpu,
        "Fused D2Q9 stream+collide (pull) steps: f [n,9,H,W] -> out, per-env omega [n] and solid mask [n,H,W]",
        pybind11::arg("f"), pybind11::arg("out"), pybind11::arg("scratch"), pybind11::arg("solid"),
        pybind11::arg("omega"), pybind11::arg("u_in"), pybind11::arg("steps"), pybind11::arg("x_boundary"),
        pybind11::arg("y_boundary"), pybind11::arg("collision"), pybind11::arg("magic"));
}
