// Runtime facts queried through the statically linked CUDA runtime.
#include <cuda_runtime.h>

#include "cuda_check.h"
#include "cuda_runtime_info.h"

namespace dynadiff {

int cuda_device_count() {
  int n = 0;
  // No driver or no device is a normal state on CPU machines: report 0 devices.
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return n;
}

void require_cuda_device(const char* op) {
  if (cuda_device_count() == 0)
    throw std::runtime_error(std::string(op) + ": the CUDA backend needs a CUDA device, and none is visible");
}

}  // namespace dynadiff
