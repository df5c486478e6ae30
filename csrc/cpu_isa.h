// The CPU instruction-set paths of apt_ext's SIMD kernels, the CPU flags each one needs, and the
// run-time choice between them: the one place that knows this. The FP4 and left-spin CPU
// kernels, build_info() and capabilities() all ask here.
//
// A path is compiled from the *_<path>.cpp files with the matching -m flags (CMakeLists.txt,
// APT_ISA_FLAGS_<path>, which must list exactly the flags below; tests/test_cpu_isa.py checks
// it) and is only called on a CPU that has every one of them. Flag names are those of
// /proc/cpuinfo and of __builtin_cpu_supports.
#pragma once
#include <vector>

namespace apt::cpu_isa {

enum class Isa { kScalar, kAvx2, kAvx512 };

// Every path, slowest first.
inline constexpr Isa kPaths[] = {Isa::kScalar, Isa::kAvx2, Isa::kAvx512};

// "scalar", "avx2" or "avx512": the value the *_CPU_ISA environment variables take.
const char* name(Isa isa);

// The CPU flags the path's code may use (empty for scalar).
const std::vector<const char*>& required_flags(Isa isa);

// The build contains the path (the SIMD paths exist on x86-64 builds only).
bool compiled(Isa isa);

// Compiled, and this CPU (and its OS) has every required flag.
bool supported(Isa isa);

// The fastest supported path.
Isa best();

// The path a capability's kernels use now: best(), unless the environment variable `env_var`
// names one (tests force every path with it). Raises ValueError naming `env_var` when the value
// is not a path name or the path is not supported here.
Isa selected(const char* env_var);

// The environment variables of the capabilities with SIMD CPU kernels.
inline constexpr const char* kFp4Env = "APT_FP4_CPU_ISA";
inline constexpr const char* kLeftSpinEnv = "APT_LEFT_SPIN_CPU_ISA";

}  // namespace apt::cpu_isa
