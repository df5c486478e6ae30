// Python bindings of apt_ext._C beyond the torch ops: each capability that needs pybind11
// (the VGPU pager) registers a binder with APT_REGISTER_BINDINGS in its own file, so
// module.cpp never has to know about it. Only pybind11 here: a file that passes tensors to
// Python includes <torch/csrc/utils/pybind.h> (the tensor casters) itself; <torch/extension.h>
// (the whole C++ frontend) is never needed and tripled the build time.
#pragma once
#include <pybind11/pybind11.h>

#include <functional>
#include <vector>

namespace apt {

using Binder = void (*)(pybind11::module_& m);

// Registered binders, in static-initialisation order.
std::vector<Binder>& binders();

struct BindingRegistrar {
  explicit BindingRegistrar(Binder b) { binders().push_back(b); }
};

// Build facts (compiled backends, SIMD, libraries) that capabilities() reports.
void set_build_flag(const char* name, bool value);

}  // namespace apt

#define APT_REGISTER_BINDINGS(fn) static ::apt::BindingRegistrar apt_binder_##fn(&fn)
