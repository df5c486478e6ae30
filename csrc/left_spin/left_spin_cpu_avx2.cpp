// Left-spin CPU kernels compiled for AVX2 (built with the -m flags CMake gives *_avx2.cpp; called only on CPUs that have them).
#define CPU_CAPABILITY AVX2
#define CPU_CAPABILITY_AVX2
#define APT_LS_ISA avx2
#include "left_spin/left_spin_cpu_kernel.h"
