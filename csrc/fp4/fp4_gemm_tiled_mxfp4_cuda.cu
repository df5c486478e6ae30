// The GEMM kernels of fp4_linear_tiled for mxfp4 weights, without GELU (one of four translation
// units, so that a build compiles them in parallel: fp4_gemm_tiled_kernel_cuda.h).
#include "fp4/fp4_gemm_tiled_kernel_cuda.h"

namespace apt::fp4::cuda {
template void launch_gemm_kernel<Format::MXFP4, false>(const GemmKernelLaunch&);
}  // namespace apt::fp4::cuda
