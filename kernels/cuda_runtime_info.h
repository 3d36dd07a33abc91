#pragma once

namespace dynadiff {
// Number of CUDA devices visible to the runtime; 0 without a driver.
int cuda_device_count();
// Throws std::runtime_error naming `op` when no CUDA device is visible.
void require_cuda_device(const char* op);
}  // namespace dynadiff
