// The GEMV kernels of fp4_linear_tiled for mxfp4 weights (one of three translation units, so that a
// build compiles them in parallel: fp4_gemv_kernel_cuda.h).
#include "fp4/fp4_gemv_kernel_cuda.h"

namespace apt::fp4::cuda {
template bool launch_gemv<Format::MXFP4>(const TiledLinearArgs&, const GemvConfig&, dim3, cudaStream_t,
                                         at::ScalarType, bool);
}  // namespace apt::fp4::cuda
