// CUDA GEMM of apt::fp4_linear_tiled for more rows of x (issue 11: M = 17..128): out = x @ W.T *
// out_scale + bias (+ GELU) for an nvfp4 / mxfp4 weight in the tiled layout
// (fp4_tiled_layout.h) and bfloat16 x. Experimental: fp4_linear_tiled runs it only when
// APT_FP4_GEMM is set (see fp4_gemm_tiled_cuda.h), until a GPU sweep has measured it.
//
// Where the GEMV (fp4_gemv_cuda.cu) has every warp read its own x from L1 and re-decodes the
// weights for every 16 rows of x, a block here stages 64 rows of x through shared memory once
// per 128-column step and every warp multiplies its decoded weights by all of them:
//  * a block of 8 warps: WN along N, each owning two tiles (32 weight rows), times KW = 8 / WN
//    along K; every warp streams its tiles' codes and scales through a register ring two steps
//    ahead (as the GEMV does) and decodes each word once for 8 mma (64 rows of x);
//  * x: each K part's warps copy their next steps' x (64 rows x 128 columns, 16 KiB) into a ring
//    of kXStages shared-memory buffers with cp.async (rows past M zero-filled), one
//    __syncthreads per step; rows sit at a 320-byte pitch, so a warp's 16-byte B-fragment reads
//    (8 rows x 64 bytes) are conflict-free;
//  * the K parts' sums meet in shared memory at the end (one launch, deterministic).
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <cuda_bf16.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <type_traits>

#include "fp4/fp4_gemm_tiled_cuda.h"
#include "fp4/fp4_mma_cuda.h"
#include "fp4/fp4_tiled_decode_cuda.h"

namespace apt::fp4::cuda {
namespace {

constexpr int kWarps = 8;                                  // warps per block (WN * KW)
constexpr int kTilesPerWarp = 2;                           // 32 weight rows per warp
constexpr int kBlockRows = kGemmRowsPerBlock;              // rows of x per block
constexpr int kXBlocks = kBlockRows / 8;                   // mma n8 blocks of x per block
constexpr int kXStages = 3;                                // x steps in shared memory per K part
constexpr int kXPitch = kStepCols + 32;                    // bfloat16 per staged row (320 bytes)
constexpr int kXStageElems = kBlockRows * kXPitch;         // one staged step of one K part
constexpr int kWeightStages = 2;                           // register ring of weight steps
constexpr int kChunksPerRow = kStepCols * 2 / 16;          // 16-byte chunks per row of a step

// Dynamic shared memory: KW * kXStages staged x steps, reused for the K-part sums at the end.
constexpr size_t gemm_smem_bytes(int kw) {
  const size_t x_bytes = sizeof(__nv_bfloat16) * static_cast<size_t>(kw) * kXStages * kXStageElems;
  const size_t sum_bytes = sizeof(float) * static_cast<size_t>(kw - 1) * (kWarps / kw) * kTilesPerWarp * kXBlocks *
                           4 * 32;
  return x_bytes > sum_bytes ? x_bytes : sum_bytes;
}

// 16 bytes global -> shared, zero-filled when `valid` is false (cp.async with src-size 0).
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, bool valid) {
  const uint32_t dst = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(dst), "l"(gmem), "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;" ::"n"(N));
}

// Grid: ceil(n_tiles / (2 WN)) * m_blocks blocks (m_blocks = ceil(m / 64), the x block varying
// fastest), 256 threads. Warp w: tiles 2 ((blockIdx.x / m_blocks) * WN + w % WN) + u, K part w / WN.
// args.rw = WN, args.kw = KW, args.steps_per_part = ceil(steps / KW).
template <Format F, bool kGelu>
__global__ void __launch_bounds__(kWarps * 32, 1) gemm_tiled_kernel(const TiledLinearArgs args) {
  static_assert(F != Format::NF4, "nf4 decodes through a shared-memory table: the GEMV path");
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const int wn = warp % args.rw, part = warp / args.rw;
  const int64_t m_block = blockIdx.x % args.m_blocks;
  const int64_t tile0 = (static_cast<int64_t>(blockIdx.x / args.m_blocks) * args.rw + wn) * kTilesPerWarp;
  const int64_t row_first = m_block * kBlockRows;
  const int64_t s_begin = part * args.steps_per_part;
  const int64_t n_steps = s_begin >= args.steps ? 0 : min(args.steps - s_begin, args.steps_per_part);
  const bool has_tile = tile0 < args.n_tiles;

  extern __shared__ __align__(16) unsigned char dyn_smem[];
  __nv_bfloat16* xs = reinterpret_cast<__nv_bfloat16*>(dyn_smem) + static_cast<size_t>(part) * kXStages * kXStageElems;

  // This K part's threads copy x step s into stage buffer s % kXStages: chunk q of the 64 x 16
  // chunks of 16 bytes is row q / 16, columns 8 (q % 16) .. + 7.
  const int part_thread = threadIdx.x - part * args.rw * 32, part_threads = args.rw * 32;
  const __nv_bfloat16* x = static_cast<const __nv_bfloat16*>(args.x);
  auto load_x_step = [&](int64_t s) {
    __nv_bfloat16* dst = xs + (s % kXStages) * kXStageElems;
    for (int q = part_thread; q < kBlockRows * kChunksPerRow; q += part_threads) {
      const int r = q / kChunksPerRow, c = q % kChunksPerRow;
      const int64_t row = row_first + r;
      const bool valid = row < args.m;
      const __nv_bfloat16* src = x + (valid ? row : 0) * args.x_stride + (s_begin + s) * kStepCols + 8 * c;
      cp_async16(dst + r * kXPitch + 8 * c, src, valid);
    }
  };

  float acc[kTilesPerWarp][kXBlocks][4];
#pragma unroll
  for (int u = 0; u < kTilesPerWarp; ++u)
#pragma unroll
    for (int i = 0; i < kXBlocks; ++i) acc[u][i][0] = acc[u][i][1] = acc[u][i][2] = acc[u][i][3] = 0.0f;

  // Weights: the GEMV's register ring (WeightRing), two steps ahead; a warp without tiles loads
  // nothing.
  WeightRing<F, kWeightStages, kTilesPerWarp> ring(args, has_tile ? tile0 : 0, s_begin, lane);
#pragma unroll
  for (int i = 0; i < kWeightStages; ++i) {
    if (has_tile && i < n_steps) ring.load(i, args);
    ring.advance(args);
  }
#pragma unroll
  for (int s = 0; s < kXStages - 1; ++s) {
    if (s < n_steps) load_x_step(s);
    cp_async_commit();
  }

  // Every warp runs steps_per_part steps (the block's barriers must match); a K part with fewer
  // steps, or a warp without tiles, skips the work of the extra ones. Step s uses ring slot
  // I = s % kWeightStages, a compile-time index (the loop is unrolled by the ring's depth) so
  // that the ring stays in registers.
  auto step = [&](int64_t s, auto slot) {
    constexpr int I = decltype(slot)::value;
    cp_async_wait<kXStages - 2>();
    __syncthreads();  // step s's x is in shared memory; stage (s - 1) % kXStages is free again
    if (s + kXStages - 1 < n_steps) load_x_step(s + kXStages - 1);
    cp_async_commit();
    if (s >= n_steps || !has_tile) return;
    const __nv_bfloat16* xstep = xs + (s % kXStages) * kXStageElems + g * kXPitch + 8 * t;
#pragma unroll
    for (int c = 0; c < 4; ++c) {
      // B fragments of chunk c for the 8 blocks of x: row 8 xb + g, columns 32 c + 8 t .. + 7
      // (words 0, 1 feed mma 2c, words 2, 3 mma 2c + 1; fp4_tiled_layout.h).
      uint4 b[kXBlocks];
#pragma unroll
      for (int xb = 0; xb < kXBlocks; ++xb) b[xb] = *reinterpret_cast<const uint4*>(xstep + xb * 8 * kXPitch + 32 * c);
#pragma unroll
      for (int jj = 0; jj < 2; ++jj) {
        const int j = 2 * c + jj;
#pragma unroll
        for (int u = 0; u < kTilesPerWarp; ++u) {
          uint32_t a[4];
          decode_word<F>(word_of(j < 4 ? ring.c0[I][u] : ring.c1[I][u], j & 3), ring.sc[I][u], j, nullptr, a);
#pragma unroll
          for (int xb = 0; xb < kXBlocks; ++xb) {
            MmaType<at::BFloat16>::mma(acc[u][xb], a, word_of(b[xb], 2 * jj), word_of(b[xb], 2 * jj + 1));
          }
        }
      }
    }
    if (s + kWeightStages < n_steps) ring.load(I, args);
    ring.advance(args);
  };
  static_assert(kWeightStages == 2, "the loop below is unrolled by the ring's depth");
  for (int64_t s = 0; s < args.steps_per_part; s += kWeightStages) {
    step(s, std::integral_constant<int, 0>{});
    if (s + 1 < args.steps_per_part) step(s + 1, std::integral_constant<int, 1>{});
  }
  cp_async_wait<0>();
  __syncthreads();  // the x stages are reused for the K-part sums

  // K parts 1.. hand their sums to part 0 through shared memory (the x stages, free now).
  reduce_k_parts(acc, reinterpret_cast<float*>(dyn_smem), part, args.rw, wn, args.kw, lane);
  if (part != 0 || !has_tile) return;
  store_outputs<at::BFloat16, kGelu>(acc, args, tile0, row_first, g, t);
}

}  // namespace

bool gemm_tiled_supported(Format f, at::ScalarType x_dtype) {
  return f != Format::NF4 && x_dtype == at::kBFloat16;
}

GemmTiledConfig gemm_tiled_config() {
  static const GemmTiledConfig cfg = [] {
    GemmTiledConfig c{0, 2};
    const char* env = std::getenv("APT_FP4_GEMM");
    if (env == nullptr || *env == '\0') return c;
    long long min_rows = 0;
    int k_parts = 2;
    const int got = std::sscanf(env, "%lld,%d", &min_rows, &k_parts);
    TORCH_CHECK_VALUE(got >= 1 && min_rows >= 0 && (k_parts == 1 || k_parts == 2),
                      "APT_FP4_GEMM: expected 'min_rows[,k_parts]' with min_rows >= 0 and k_parts 1 or 2, got '",
                      env, "'");
    c.min_rows = min_rows;
    c.k_parts = k_parts;
    return c;
  }();
  return cfg;
}

void launch_gemm_tiled(TiledLinearArgs args, Format f, bool gelu, int k_parts, cudaStream_t stream) {
  TORCH_CHECK(gemm_tiled_supported(f, at::kBFloat16), "fp4_linear_tiled: the GEMM path takes nvfp4 and mxfp4 only");
  // K parts: 1 or 2 (their x stages must fit the 227 KiB of shared memory a block may have).
  TORCH_CHECK_VALUE(k_parts == 1 || k_parts == 2, "fp4_linear_tiled: GEMM K parts must be 1 or 2, got ", k_parts);
  args.kw = k_parts;
  args.rw = kWarps / k_parts;
  args.steps_per_part = (args.steps + args.kw - 1) / args.kw;
  const int64_t m_blocks = (args.m + kBlockRows - 1) / kBlockRows;
  const int64_t tile_blocks = (args.n_tiles + kTilesPerWarp * args.rw - 1) / (kTilesPerWarp * args.rw);
  TORCH_CHECK_VALUE(tile_blocks * m_blocks < (int64_t{1} << 31), "fp4_linear_tiled: too many rows of x for one launch; split x");
  args.m_blocks = static_cast<int>(m_blocks);
  const size_t smem = gemm_smem_bytes(args.kw);
  auto go = [&](auto kernel) {
    C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
    kernel<<<static_cast<unsigned>(tile_blocks * m_blocks), kWarps * 32, smem, stream>>>(args);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  };
  if (f == Format::NVFP4) {
    gelu ? go(gemm_tiled_kernel<Format::NVFP4, true>) : go(gemm_tiled_kernel<Format::NVFP4, false>);
  } else {
    gelu ? go(gemm_tiled_kernel<Format::MXFP4, true>) : go(gemm_tiled_kernel<Format::MXFP4, false>);
  }
}

}  // namespace apt::fp4::cuda
