// Per-element math of spectral_mix, shared by the CPU kernel (csrc/spectral_mix_cpu.cpp) and the
// CUDA kernel (kernels/spectral_mix.cu): complex multiply-accumulate on (re, im) pairs.
#pragma once
#include "hd.h"

namespace dynadiff {
namespace spectral_mix {

// acc += x * w (complex), each number held as a (re, im) pair of T.
template <typename T>
DD_HD void cmac(T& acc_re, T& acc_im, T x_re, T x_im, T w_re, T w_im) {
  acc_re += x_re * w_re - x_im * w_im;
  acc_im += x_re * w_im + x_im * w_re;
}

}  // namespace spectral_mix
}  // namespace dynadiff
