// apt_ext._C.cpu_isa: the SIMD paths of cpu_isa.h and the one each capability uses now, for
// capabilities(), the tests (which force every supported path) and the benchmarks' JSON; and the
// build fact cpu_parallel_for (whether at::parallel_for in our objects uses torch's threads).
#include <ATen/Parallel.h>
#include <torch/extension.h>

#include <string>
#include <vector>

#include "bindings.h"
#include "cpu_isa.h"

namespace py = pybind11;

namespace apt::cpu_isa {
namespace {

std::vector<std::string> flag_list(Isa isa) {
  const auto& f = required_flags(isa);
  return {f.begin(), f.end()};
}

py::list paths() {
  py::list out;
  for (Isa p : kPaths) {
    py::dict d;
    d["name"] = name(p);
    d["requires"] = flag_list(p);
    d["compiled"] = compiled(p);
    d["supported"] = supported(p);
    out.append(d);
  }
  return out;
}

// {capability: {"path", "requires", "env"}} for the paths in use now; a bad forced value gives
// {"env", "error"} instead, so a report never raises.
py::dict in_use() {
  py::dict out;
  for (auto [cap, env] : {std::pair{"fp4", kFp4Env}, std::pair{"left_spin", kLeftSpinEnv}}) {
    py::dict d;
    d["env"] = env;
    try {
      const Isa p = selected(env);
      d["path"] = name(p);
      d["requires"] = flag_list(p);
    } catch (const c10::Error& e) {
      d["error"] = e.what_without_backtrace();
    }
    out[cap] = d;
  }
  return out;
}

void bind_cpu_isa(py::module_& m) {
#ifdef INTRA_OP_PARALLEL  // ATen's intra-op parallel code is compiled in (OpenMP here, see CMakeLists.txt)
  apt::set_build_flag("cpu_parallel_for", true);
#else
  apt::set_build_flag("cpu_parallel_for", false);
#endif
  auto sub = m.def_submodule("cpu_isa", "SIMD paths of the CPU kernels (csrc/cpu_isa.h)");
  sub.def("paths", &paths, "[{name, requires (CPU flags), compiled, supported}], slowest first");
  sub.def("in_use", &in_use,
          "{capability: {path, requires, env}} (or {env, error} when env names an unusable path)");
}

APT_REGISTER_BINDINGS(bind_cpu_isa);

}  // namespace
}  // namespace apt::cpu_isa
