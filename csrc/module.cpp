// The Python module apt_ext._C: importing it runs the static TORCH_LIBRARY registrations of
// every kernel file, then exposes build facts and the pybind11 bindings of the capabilities.
#include "bindings.h"
#include "cpu_isa.h"

#include <map>
#include <string>

namespace apt {

std::vector<Binder>& binders() {
  static std::vector<Binder> registry;
  return registry;
}

static std::map<std::string, bool>& build_flags() {
  static std::map<std::string, bool> flags;
  return flags;
}

void set_build_flag(const char* name, bool value) { build_flags()[name] = value; }

}  // namespace apt

namespace {

pybind11::dict build_info() {
  pybind11::dict d;
#ifdef APT_WITH_CUDA
  d["cuda"] = true;
  d["cuda_archs"] = std::string(APT_CUDA_ARCHS);
#else
  d["cuda"] = false;
  d["cuda_archs"] = std::string();
#endif
#ifdef APT_X86
  d["x86_simd_compiled"] = true;
#else
  d["x86_simd_compiled"] = false;
#endif
  d["cpu_avx2"] = apt::cpu_isa::supported(apt::cpu_isa::Isa::kAvx2);
  d["cpu_avx512"] = apt::cpu_isa::supported(apt::cpu_isa::Isa::kAvx512);
  for (const auto& kv : apt::build_flags()) d[kv.first.c_str()] = kv.second;
  return d;
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "apt_ext native kernels (ops are under torch.ops.apt)";
  m.def("build_info", &build_info, "What this build compiled and what this CPU supports.");
  for (auto bind : apt::binders()) bind(m);
}
