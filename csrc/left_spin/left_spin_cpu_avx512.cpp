// Left-spin CPU kernels compiled for AVX512 (built with the -m flags CMake gives *_avx512.cpp; called only on CPUs that have them).
#define CPU_CAPABILITY AVX512
#define CPU_CAPABILITY_AVX512
#define APT_LS_ISA avx512
#include "left_spin/left_spin_cpu_kernel.h"
