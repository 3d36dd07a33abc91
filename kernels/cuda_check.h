// Error handling shared by every CUDA launcher: a failed CUDA call becomes a C++ exception
// (a Python RuntimeError) that names the call, never a silent wrong result.
#pragma once
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#define DYNADIFF_CUDA_CHECK(expr)                                                                 \
  do {                                                                                            \
    cudaError_t err_ = (expr);                                                                    \
    if (err_ != cudaSuccess)                                                                      \
      throw std::runtime_error(std::string("CUDA error in ") + #expr + ": " + cudaGetErrorString(err_)); \
  } while (0)
