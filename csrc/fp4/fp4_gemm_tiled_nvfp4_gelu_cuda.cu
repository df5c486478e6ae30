// The GEMM kernels of fp4_linear_tiled for nvfp4 weights, with the GELU epilogue (one of four translation
// units, so that a build compiles them in parallel: fp4_gemm_tiled_kernel_cuda.h).
#include "fp4/fp4_gemm_tiled_kernel_cuda.h"

namespace apt::fp4::cuda {
template void launch_gemm_kernel<Format::NVFP4, true>(const GemmKernelLaunch&);
}  // namespace apt::fp4::cuda
