// The tiled-layout FP4 GEMM (fp4_gemm_tiled_cuda.cu): 32 or 64 rows of bfloat16 x per block,
// staged through shared memory, for nvfp4 / mxfp4 weights. fp4_linear_tiled (fp4_gemv_cuda.cu)
// calls it instead of the GEMV when APT_FP4_GEMM="min_rows[,k_parts[,splits[,tiles_per_warp]]]"
// is set and x has at least min_rows rows: an experimental path until a GPU sweep has measured it
// (issue 11).
#pragma once
#include <ATen/ATen.h>
#include <cuda_runtime.h>

#include "fp4/fp4_format.h"
#include "fp4/fp4_tiled_decode_cuda.h"

namespace apt::fp4::cuda {

// Whether the GEMM takes this format and x dtype (nvfp4 / mxfp4, bfloat16 x).
bool gemm_tiled_supported(Format f, at::ScalarType x_dtype);

// APT_FP4_GEMM (read once): the fewest rows of x that take the GEMM (0: never, the default), its
// K parts per block (1, 2 or 4; default 2), its blocks along K (0, the default: enough to fill the
// GPU) and its tiles per warp (2: 64 rows of x per block, the default; 4: 32 rows).
struct GemmTiledConfig {
  int64_t min_rows;
  int k_parts;
  int64_t splits;
  int tiles_per_warp;
};
GemmTiledConfig gemm_tiled_config();

// Launches the GEMM on `stream` for `args` as fp4_linear_tiled fills them (x padded to whole
// steps and 16-byte aligned, out [m, n] bfloat16); sets the block shape fields itself and
// allocates the splits' workspace like `like` (same device).
void launch_gemm_tiled(TiledLinearArgs args, Format f, bool gelu, const GemmTiledConfig& cfg, const at::Tensor& like,
                       cudaStream_t stream);

}  // namespace apt::fp4::cuda
