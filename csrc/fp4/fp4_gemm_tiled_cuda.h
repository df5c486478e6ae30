// The tiled-layout FP4 GEMM (fp4_gemm_tiled_cuda.cu): 32 or 64 rows of bfloat16 x per block,
// staged through shared memory, for nvfp4 / mxfp4 weights. fp4_linear_tiled (fp4_gemv_cuda.cu)
// calls it instead of the GEMV when x has at least kGemmDefaultMinRows rows, or as
// APT_FP4_GEMM="min_rows[,k_parts[,splits[,tiles_per_warp[,rows[,mma]]]]]" says (tuning sweeps;
// "0": never).
#pragma once
#include <ATen/ATen.h>
#include <cuda_runtime.h>

#include "fp4/fp4_format.h"
#include "fp4/fp4_tiled_decode_cuda.h"

namespace apt::fp4::cuda {

// Where the GEMM is the default (no APT_FP4_GEMM): from kGemmDefaultMinRows rows of x on weights
// of at least kGemmDefaultMinN rows. H200 sweep round 11b
// (benchmarks/results/fp4_gemv_sweep_NVIDIA_H200_round11b.json, nvfp4, bf16 x, the GEMM with one
// K part and blocks along K chosen per shape): at 128 rows of x it took 72.4 / 219.2 us on 14336 x
// 4096 / 28672 x 8192 against the GEMV's 86.2 / 287.9 us, but 38.3 / 90.4 us on 4096 x 4096 /
// 4096 x 14336 against 27.1 / 77.4; at 64 rows it was ahead only on 28672 x 8192. 65 to 127 rows
// were not measured.
constexpr int64_t kGemmDefaultMinRows = 65;
constexpr int64_t kGemmDefaultMinN = 8192;

// Whether the GEMM takes this format and x dtype (nvfp4 / mxfp4, bfloat16 x).
bool gemm_tiled_supported(Format f, at::ScalarType x_dtype);

// APT_FP4_GEMM (read once): the fewest rows of x that take the GEMM (default kGemmDefaultMinRows
// where the weight has kGemmDefaultMinN rows; set: any weight; 0: never), its K parts per block
// (1, 2 or 4; default 1), its blocks along K (0, the default: enough to fill the GPU), its tiles
// per warp and rows of x per block (a warp tile built for the kind of product: mma.sync 2 x 64, the
// default, 4 x 32, 2 x 32, 1 x 64; wgmma 2 x 32, 1 x 64, 2 x 64, 1 x 128, and with word copies also
// 1 or 2 x 8 or 16; rows 0: 64 below 4 tiles, else 32), and the kind of product (GemmProduct;
// the wgmma kinds need an sm_90a build, a compute capability 9.0 GPU and 1 or 2 K parts).
enum class GemmProduct : int {
  kMmaSync = 0,         // mma.sync m16n8k16; x rows at a padded pitch, copied by 16-byte chunks
  kWgmmaWordCopy = 1,   // wgmma; x copied word by word (4 bytes) straight into wgmma's core matrices
  kWgmmaTranspose = 2,  // wgmma; x copied by 16-byte chunks into a plain ring, then transposed into
                        // the core matrices in shared memory
};
struct GemmTiledConfig {
  int64_t min_rows;
  int64_t min_n;  // weight rows, at least (kGemmDefaultMinN by default, 0 when APT_FP4_GEMM is set)
  int k_parts;
  int64_t splits;
  int tiles_per_warp;
  int rows_per_block;   // rows of x per block (8 per mma n8 block): 32, 64 or (wgmma) 8, 16, 128
  GemmProduct product;  // APT_FP4_GEMM's sixth field
};
GemmTiledConfig gemm_tiled_config();

// Launches the GEMM on `stream` for `args` as fp4_linear_tiled fills them (x padded to whole
// steps and 16-byte aligned, out [m, n] bfloat16); sets the block shape fields itself and
// allocates the splits' workspace like `like` (same device).
void launch_gemm_tiled(TiledLinearArgs args, Format f, bool gelu, const GemmTiledConfig& cfg, const at::Tensor& like,
                       cudaStream_t stream);

}  // namespace apt::fp4::cuda
