// dynadiff_fast._C: build facts plus every op registered with DYNADIFF_BIND in csrc/*.cpp.
#include <pybind11/pybind11.h>

#include "registry.h"

#if defined(DYNADIFF_WITH_CUDA)
#include "cuda_runtime_info.h"
#endif
#if defined(DYNADIFF_HAVE_OPENMP)
#include <omp.h>
#endif

namespace py = pybind11;

static int cuda_device_count() {
#if defined(DYNADIFF_WITH_CUDA)
  return dynadiff::cuda_device_count();
#else
  return 0;
#endif
}

PYBIND11_MODULE(_C, m) {
  m.doc() = "dynadiff_fast C++/CUDA kernels (pointer + shape + stride interface, no libtorch)";
#if defined(DYNADIFF_WITH_CUDA)
  m.attr("cuda_build") = true;
  m.attr("cuda_archs") = DYNADIFF_CUDA_ARCHS;
  m.attr("nvcc_version") = DYNADIFF_NVCC_VERSION;
#else
  m.attr("cuda_build") = false;
  m.attr("cuda_archs") = "";
  m.attr("nvcc_version") = "";
#endif
#if defined(DYNADIFF_HAVE_OPENMP)
  m.attr("openmp") = true;
#else
  m.attr("openmp") = false;
#endif
  m.def("cuda_device_count", &cuda_device_count, "CUDA devices visible to the CUDA runtime (0 without a driver)");
  for (auto& [name, bind] : dynadiff::binders()) bind(m);
}
