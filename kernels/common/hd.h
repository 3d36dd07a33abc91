// Qualifiers for per-cell math shared by the CPU kernels (g++) and the CUDA kernels (nvcc).
// Code written once with DD_HD runs in both, so the CPU tests exercise what the GPU runs.
#pragma once

#if defined(__CUDACC__)
#define DD_HD __host__ __device__ __forceinline__
#else
#define DD_HD inline
#endif
