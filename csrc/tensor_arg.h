// A tensor as it crosses from Python into C++: raw pointer, shape, strides (in elements), and the
// argument checks the csrc/*.cpp bindings share. Validation (dtype, device, contiguity) happens on the
// Python side; C++ only checks ranks/shapes it relies on, so a mismatch is an exception and never an
// out-of-bounds access.
#pragma once
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <initializer_list>
#include <stdexcept>
#include <string>
#include <vector>

namespace dynadiff {

struct TensorArg {
  std::uintptr_t ptr = 0;
  std::vector<int64_t> shape;
  std::vector<int64_t> strides;

  int64_t dim() const { return static_cast<int64_t>(shape.size()); }
  int64_t numel() const {
    int64_t n = 1;
    for (auto s : shape) n *= s;
    return n;
  }
  template <typename T>
  T* data() const { return reinterpret_cast<T*>(ptr); }

  void check_dim(int64_t d, const char* name) const {
    if (dim() != d)
      throw std::invalid_argument(std::string(name) + ": expected " + std::to_string(d) + " dims, got " +
                                  std::to_string(dim()));
  }
  void check_contiguous(const char* name) const {
    int64_t expect = 1;
    for (int64_t i = dim() - 1; i >= 0; --i) {
      if (shape[i] != 1 && strides[i] != expect)
        throw std::invalid_argument(std::string(name) + ": expected a contiguous tensor");
      expect *= shape[i];
    }
  }
  // Rank, contiguity, then every size: "name: dim d is X, expected Y".
  void check_shape(std::initializer_list<int64_t> expected, const char* name) const {
    check_dim(static_cast<int64_t>(expected.size()), name);
    check_contiguous(name);
    int64_t d = 0;
    for (int64_t s : expected) {
      if (shape[d] != s)
        throw std::invalid_argument(std::string(name) + ": dim " + std::to_string(d) + " is " +
                                    std::to_string(shape[d]) + ", expected " + std::to_string(s));
      ++d;
    }
  }
};

// Argument checks of the ops with a CPU kernel and a CUDA binding: defined beside the CPU kernel
// (csrc/<op>_cpu.cpp), called by both bindings.

// lbm_step: f, out [n, 9, H, W], solid [n, H, W], omega [n], u_in [n, H]; scratch [n, 9, H, W] when steps > 1.
void check_lbm_step_args(const TensorArg& f, const TensorArg& out, const TensorArg& scratch, const TensorArg& solid,
                         const TensorArg& omega, const TensorArg& u_in, int64_t steps);

// spectral_mix: x [E, B, I, M, 2], w [E, I, O, M, 2], y [E, B, O, M, 2] (real views of contiguous
// complex tensors). Returns {E, B, I, O, M}.
std::vector<int64_t> check_spectral_mix_args(const TensorArg& x, const TensorArg& w, const TensorArg& y);

}  // namespace dynadiff

namespace pybind11::detail {
// Python passes (data_ptr, shape, strides) tuples, built by dynadiff_fast._tensor.tensor_arg.
template <>
struct type_caster<dynadiff::TensorArg> {
  PYBIND11_TYPE_CASTER(dynadiff::TensorArg, const_name("TensorArg"));
  bool load(handle src, bool) {
    if (!isinstance<tuple>(src)) return false;
    auto t = reinterpret_borrow<tuple>(src);
    if (t.size() != 3) return false;
    value.ptr = t[0].cast<std::uintptr_t>();
    value.shape = t[1].cast<std::vector<int64_t>>();
    value.strides = t[2].cast<std::vector<int64_t>>();
    return value.shape.size() == value.strides.size();
  }
  static handle cast(const dynadiff::TensorArg&, return_value_policy, handle) { return none().release(); }
};
}  // namespace pybind11::detail
