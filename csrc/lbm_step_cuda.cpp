// Python binding of the CUDA lbm_step launcher (kernels/lbm_step.cu); absent from CPU-only builds.
#if defined(DYNADIFF_WITH_CUDA)
#include <cstdint>
#include "lbm_step.h"
#include "registry.h"
#include "tensor_arg.h"

using dynadiff::TensorArg;

namespace {

void lbm_step_cuda(const TensorArg& f, const TensorArg& out, const TensorArg& scratch, const TensorArg& solid,
                   const TensorArg& omega, const TensorArg& u_in, int64_t steps, int64_t x_boundary,
                   int64_t y_boundary, int64_t collision, double magic, double smagorinsky, std::uintptr_t stream) {
  dynadiff::check_lbm_step_args(f, out, scratch, solid, omega, u_in, steps);
  const int64_t n = f.shape[0], H = f.shape[2], W = f.shape[3];
  dynadiff::lbm_step_cuda(f.data<float>(), out.data<float>(), scratch.data<float>(), solid.data<uint8_t>(),
                          omega.data<float>(), u_in.data<float>(), n, static_cast<int>(H), static_cast<int>(W), steps,
                          static_cast<int>(x_boundary), static_cast<int>(y_boundary), static_cast<int>(collision),
                          static_cast<float>(magic), static_cast<float>(smagorinsky),
                          reinterpret_cast<cudaStream_t>(stream));
}

}  // namespace

DYNADIFF_BIND(lbm_step_cuda) {
  m.def("lbm_step_cuda", &lbm_step_cuda,
        "Fused D2Q9 stream+collide (pull) steps on the GPU; same arguments as lbm_step_cpu plus a stream handle",
        pybind11::arg("f"), pybind11::arg("out"), pybind11::arg("scratch"), pybind11::arg("solid"),
        pybind11::arg("omega"), pybind11::arg("u_in"), pybind11::arg("steps"), pybind11::arg("x_boundary"),
        pybind11::arg("y_boundary"), pybind11::arg("collision"), pybind11::arg("magic"), pybind11::arg("smagorinsky"),
        pybind11::arg("stream"));
}
#endif
