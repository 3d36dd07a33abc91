// Python binding of the CUDA spectral_mix launcher (kernels/spectral_mix.cu); absent from CPU-only builds.
#if defined(DYNADIFF_WITH_CUDA)
#include <cstdint>
#include <stdexcept>
#include <string>

#include "registry.h"
#include "spectral_mix.h"
#include "tensor_arg.h"

using dynadiff::TensorArg;

namespace {

void check(const TensorArg& t, const char* name, std::initializer_list<int64_t> shape) {
  t.check_dim(static_cast<int64_t>(shape.size()), name);
  t.check_contiguous(name);
  int64_t k = 0;
  for (int64_t s : shape) {
    if (t.shape[k] != s)
      throw std::invalid_argument(std::string(name) + ": dim " + std::to_string(k) + " is " +
                                  std::to_string(t.shape[k]) + ", expected " + std::to_string(s));
    ++k;
  }
}

// Same arguments as spectral_mix_cpu plus a stream handle: real views [..., 2] of complex tensors.
void spectral_mix_cuda(const TensorArg& x, const TensorArg& w, const TensorArg& y, bool double_precision,
                       std::uintptr_t stream) {
  x.check_dim(5, "x_ft");
  w.check_dim(5, "weight");
  const int64_t E = x.shape[0], B = x.shape[1], I = x.shape[2], M = x.shape[3], O = w.shape[2];
  check(x, "x_ft", {E, B, I, M, 2});
  check(w, "weight", {E, I, O, M, 2});
  check(y, "out", {E, B, O, M, 2});
  dynadiff::spectral_mix_cuda(reinterpret_cast<const void*>(x.ptr), reinterpret_cast<const void*>(w.ptr),
                              reinterpret_cast<void*>(y.ptr), E, B, I, O, M, double_precision,
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
