// Left-spin CPU kernels, portable build (no SIMD flags: ATen's generic Vectorized), for CPUs without AVX2.
#define CPU_CAPABILITY DEFAULT
#define APT_LS_ISA scalar
#include "left_spin/left_spin_cpu_kernel.h"
