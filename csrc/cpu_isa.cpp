// CPU feature detection and the run-time choice of the SIMD path (cpu_isa.h).
#include "cpu_isa.h"

#include <c10/util/Exception.h>

#include <cstdlib>
#include <cstring>
#include <string>

namespace apt::cpu_isa {
namespace {

// __builtin_cpu_supports takes a string literal only, so each flag gets its own probe; the
// macro keeps the printed name and the probed name the same token.
struct Flag {
  const char* name;
  bool (*present)();
};
#if defined(APT_X86) && (defined(__GNUC__) || defined(__clang__))
#define APT_CPU_FLAG(f) \
  Flag { #f, [] { __builtin_cpu_init(); return __builtin_cpu_supports(#f) != 0; } }
#else
#define APT_CPU_FLAG(f) \
  Flag { #f, [] { return false; } }
#endif

const std::vector<Flag>& flags_of(Isa isa) {
  static const std::vector<Flag> none;
  static const std::vector<Flag> avx2 = {APT_CPU_FLAG(avx2), APT_CPU_FLAG(fma), APT_CPU_FLAG(f16c)};
  static const std::vector<Flag> avx512 = {APT_CPU_FLAG(avx512f), APT_CPU_FLAG(avx512bw), APT_CPU_FLAG(avx512vl),
                                           APT_CPU_FLAG(avx512dq), APT_CPU_FLAG(avx2),     APT_CPU_FLAG(fma),
                                           APT_CPU_FLAG(f16c)};
  switch (isa) {
    case Isa::kAvx2: return avx2;
    case Isa::kAvx512: return avx512;
    default: return none;
  }
}
#undef APT_CPU_FLAG

bool cpu_has_all(Isa isa) {
  for (const Flag& f : flags_of(isa))
    if (!f.present()) return false;
  return true;
}

}  // namespace

const char* name(Isa isa) {
  switch (isa) {
    case Isa::kAvx2: return "avx2";
    case Isa::kAvx512: return "avx512";
    default: return "scalar";
  }
}

const std::vector<const char*>& required_flags(Isa isa) {
  static const auto names = [] {
    std::vector<std::vector<const char*>> out;
    for (Isa p : kPaths) {
      out.emplace_back();
      for (const Flag& f : flags_of(p)) out.back().push_back(f.name);
    }
    return out;
  }();
  return names[static_cast<size_t>(isa)];
}

bool compiled(Isa isa) {
#if defined(APT_X86)
  return true;
#else
  return isa == Isa::kScalar;
#endif
}

bool supported(Isa isa) {
  static const bool has[] = {true, compiled(Isa::kAvx2) && cpu_has_all(Isa::kAvx2),
                             compiled(Isa::kAvx512) && cpu_has_all(Isa::kAvx512)};
  return has[static_cast<size_t>(isa)];
}

Isa best() {
  Isa out = Isa::kScalar;
  for (Isa p : kPaths)
    if (supported(p)) out = p;
  return out;
}

Isa selected(const char* env_var) {
  const char* forced = std::getenv(env_var);
  if (forced == nullptr || *forced == '\0') return best();
  for (Isa p : kPaths) {
    if (std::strcmp(forced, name(p)) != 0) continue;
    if (supported(p)) return p;
    std::string missing;
    for (const Flag& f : flags_of(p))
      if (!f.present()) missing += std::string(missing.empty() ? "" : ", ") + f.name;
    TORCH_CHECK_VALUE(false, env_var, ": '", forced, "' is not supported here (",
                      compiled(p) ? "this CPU lacks " + missing : std::string("not compiled into this build"),
                      ")");
  }
  TORCH_CHECK_VALUE(false, env_var, ": '", forced, "' is not one of scalar, avx2, avx512");
}

}  // namespace apt::cpu_isa
