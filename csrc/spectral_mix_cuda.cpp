// Python binding of the CUDA spectral_mix launcher (kernels/spectral_mix.cu); absent from CPU-only builds.
#if defined(DYNADIFF_WITH_CUDA)
#include <cstdint>
#include <vector>

#include "registry.h"
#include "spectral_mix.h"
#include "tensor_arg.h"

using dynadiff::TensorArg;

namespace {

// Same arguments as spectral_mix_cpu plus a stream handle: real views [..., 2] of complex tensors.
void spectral_mix_cuda(const TensorArg& x, const TensorArg& w, const TensorArg& y, bool double_precision,
                       std::uintptr_t stream) {
  const auto s = dynadiff::check_spectral_mix_args(x, w, y);
  dynadiff::spectral_mix_cuda(reinterpret_cast<const void*>(x.ptr), reinterpret_cast<const void*>(w.ptr),
                              reinterpret_cast<void*>(y.ptr), s[0], s[1], s[2], s[3], s[4], double_precision,
                              reinterpret_cast<cudaStream_t>(stream));
}

}  // namespace

DYNADIFF_BIND(spectral_mix_cuda) {
  m.def("spectral_mix_cuda", &spectral_mix_cuda,
        "spectral_mix on the GPU (one launch for all experts); same arguments as spectral_mix_cpu plus a stream",
        pybind11::arg("x_ft"), pybind11::arg("weight"), pybind11::arg("out"), pybind11::arg("double_precision"),
        pybind11::arg("stream"));
}
#endif
