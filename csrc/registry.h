// Decentralised pybind11 registration: every csrc/*.cpp binds its own functions with
// DYNADIFF_BIND(name) { m.def(...); }, and bindings.cpp calls them all. Adding an op never edits
// a shared file.
#pragma once
#include <pybind11/pybind11.h>

#include <utility>
#include <vector>

namespace dynadiff {

using Binder = void (*)(pybind11::module_&);

inline std::vector<std::pair<const char*, Binder>>& binders() {
  static std::vector<std::pair<const char*, Binder>> list;
  return list;
}

struct RegisterBinder {
  RegisterBinder(const char* name, Binder b) { binders().emplace_back(name, b); }
};

}  // namespace dynadiff

#define DYNADIFF_BIND(name)                                                          \
  static void dynadiff_bind_##name(pybind11::module_& m);                            \
  static ::dynadiff::RegisterBinder dynadiff_register_##name(#name, &dynadiff_bind_##name); \
  static void dynadiff_bind_##name(pybind11::module_& m)
