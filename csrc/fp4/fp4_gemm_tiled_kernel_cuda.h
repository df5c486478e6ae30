// The kernel of the CUDA GEMM of apt::fp4_linear_tiled (fp4_gemm_tiled_cuda.cu has the host side:
// the routes, APT_FP4_GEMM, the grid and the workspace). Its instantiations are split over
// fp4_gemm_tiled_{nvfp4,mxfp4}[_gelu]_cuda.cu, one format and epilogue each, so that a build compiles
// them in parallel (in one file they took most of a GPU build: about 200 s of 224 on an H100 machine,
// twenty-ninth session).
//
// The GEMM for more rows of x (issue 11: M = 17..4096): out = x @ W.T *
// out_scale + bias (+ GELU) for an nvfp4 / mxfp4 weight in the tiled layout
// (fp4_tiled_layout.h) and bfloat16 x. fp4_linear_tiled runs it where choose_gemm says
// (fp4_gemm_tiled_cuda.h: the routes where it measured faster than the GEMV, or APT_FP4_GEMM's).
//
// Where the GEMV (fp4_gemv_kernel_cuda.h) has every warp read its own x from L1 and re-decodes the
// weights for every 16 rows of x, a block here stages 8 XB rows of x through shared memory once
// per 128-column step and every warp multiplies its decoded weights by all of them:
//  * a block of 8 warps: WN along N, each owning TW tiles (16 TW weight rows), times KW = 8 / WN
//    along K; every warp streams its tiles' codes and scales through a register ring two steps
//    ahead (as the GEMV does) and decodes each word once for all 8 XB rows of x. The warp tile
//    (16 TW weight rows x 8 XB rows of x) sets the decodes per product (1 / XB) and the
//    registers;
//  * the products, one of two ways (GemmTiledConfig::wgmma):
//    - mma.sync m16n8k16 per warp, its B fragments of x read from shared memory into registers
//      (256 / TW bytes per mma). 2 x 8 and 4 x 4 run one block of 8 warps per multiprocessor,
//      2 x 4 and 1 x 8 two (round 11b's profile: latency-bound at 8 warps, the decode -> mma
//      chains leaving half the issue slots empty);
//    - Hopper's wgmma (sm_90a, fp4_wgmma_cuda.h): the four warps of a warpgroup put their decoded
//      tiles together as one 64-row A in registers and B is read by the tensor cores straight from
//      shared memory, asynchronously: one m64n(8 XB)k16 per tile and 16 columns, the decode of the
//      next 16 columns running while it computes (one group in flight), and no B registers;
//  * x: each K part's warps copy their next steps' x (8 XB rows x 128 columns), kXAhead steps
//    ahead, into a ring of x_copy_stages shared-memory buffers with cp.async (rows past M
//    zero-filled), one __syncthreads per step. mma.sync has three: the copy for step s + 2
//    refills step s - 1's buffer, whose reads ended before step s's barrier. Its rows sit at a
//    320-byte pitch, so a warp's 16-byte B-fragment reads (8 rows x 64 bytes) are conflict-free.
//    wgmma reads x as K-major core matrices (8 rows x 16 bytes, 128 contiguous bytes) holding A's
//    columns in A's k order (fp4_wgmma_cuda.h), staged one of two ways (GemmProduct):
//    - word copies: 4-byte cp.async straight into the core matrices, four buffers: a
//      warpgroup's last wgmma of step s - 1 may still be reading when step s begins, so the copy
//      refills step s - 2's buffer, whose wgmmas a warpgroup has waited for (wait_group 1) before
//      it reaches that barrier;
//    - transposed: 16-byte copies one step further ahead into three plain buffers, and after step
//      s's barrier the threads rewrite step s + 1's copy into the third of three core-matrix
//      buffers (the one step s - 2 read);
//    - bulk (thirty-fourth session): launch_gemm_tiled rearranges x into core-matrix order in
//      global memory once per call (one copy kernel), and one thread per block copies each step's
//      8 XB x 128 values with one bulk copy (TMA) into the fourth of four stages (the one step
//      s - 2 read), completing that stage's shared-memory barrier, for which every thread waits
//      before the step's products: no copy or transposition instructions in the main loop (sm_90a
//      ptxas: 879-895 instructions per two steps of a warp against the transposing form's 1009);
//  * the K parts' sums meet in shared memory at the end; with `splits` blocks along K (to fill the
//    GPU when N and M give few blocks) the blocks' sums meet in global memory, added in split
//    order by the last block to finish (one launch besides zeroing the arrival counters;
//    deterministic).
#pragma once
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <cooperative_groups.h>
#include <cuda_bf16.h>

#include <cstdint>
#include <map>
#include <mutex>
#include <tuple>
#include <type_traits>

#include "fp4/fp4_gemm_tiled_cuda.h"
#include "fp4/fp4_linear_cuda.h"
#include "fp4/fp4_mma_cuda.h"
#include "fp4/fp4_tiled_decode_cuda.h"
#include "fp4/fp4_wgmma_cuda.h"

namespace apt::fp4::cuda {
namespace {

constexpr int kWarps = 8;                                  // warps per block (WN * KW)
constexpr int kXAhead = 2;                                 // x steps copied ahead of their use
constexpr int kXPitch = kStepCols + 32;                    // bfloat16 per staged row, mma.sync (320 bytes)
constexpr int kWeightStages = 2;                           // register ring of weight steps
constexpr int kChunksPerRow = kStepCols * 2 / 16;          // 16-byte chunks per row of a step
constexpr size_t kMaxSmem = 227 * 1024;                    // dynamic shared memory a block may have
constexpr int kMinStepsPerPart = 2;                        // K steps per (split, K part), at least

constexpr bool is_wgmma(GemmProduct p) { return p != GemmProduct::kMmaSync; }

// Where x is copied to, per K part (see the header comment): x_copy_stages steps of 8 XB rows at
// x_copy_pitch bfloat16 per row. mma.sync pads rows to kXPitch; wgmma's word copies write the
// core matrices themselves (dense, one stage more); the transposing form copies into a plain ring
// whose 272-byte pitch puts a quarter-warp's 16-byte reads of 8 rows in 8 different bank groups,
// and keeps kXCoreStages stages of core matrices besides.
constexpr int x_copy_pitch(GemmProduct p) {
  return p == GemmProduct::kMmaSync ? kXPitch
                                    : (p == GemmProduct::kWgmmaTranspose ? kStepCols + 8 : kStepCols);
}
// The word copies and the bulk copies fill the core matrices themselves (one stage more than the
// steps copied ahead: a step's last wgmmas may still read the stage before).
constexpr int x_copy_stages(GemmProduct p) {
  return p == GemmProduct::kWgmmaWordCopy || p == GemmProduct::kWgmmaBulk ? kXAhead + 2 : kXAhead + 1;
}
constexpr int kXCoreStages = 3;  // the transposing form's core-matrix stages
// Steps a copy is issued ahead of the barrier after which the step's products start (the
// transposing form reads a step's copy one step before its products).
constexpr int x_copy_ahead(GemmProduct p) { return p == GemmProduct::kWgmmaTranspose ? kXAhead + 1 : kXAhead; }
// The transposition's 16-byte accesses (transpose_x_step): a quarter-warp is rows n = 0..7 of one
// 32-column group c and one chunk t (reads from the copy) or one word v (writes to the core
// matrices). Each quarter-warp takes one shared-memory wavefront when its 8 addresses fall in
// 8 different 16-byte bank groups (address / 16 mod 8).
constexpr bool transpose_conflict_free(int pitch) {
  for (int c = 0; c < 4; ++c)
    for (int tv = 0; tv < 4; ++tv) {
      int reads = 0, writes = 0;  // bit masks of the bank groups hit
      for (int n = 0; n < 8; ++n) {
        reads |= 1 << ((n * pitch * 2 + 64 * c + 16 * tv) / 16 % 8);
        writes |= 1 << (wgmma_x_word(n, 32 * c + 2 * tv) * 4 / 16 % 8);
      }
      if (reads != 0xFF || writes != 0xFF) return false;
    }
  return true;
}
static_assert(transpose_conflict_free(x_copy_pitch(GemmProduct::kWgmmaTranspose)),
              "the transposition's shared-memory accesses would conflict");
// wgmma_x_word(n, 32 c + 2 w) in unsigned arithmetic (shifts and masks; transpose_x_step).
__host__ __device__ constexpr unsigned transpose_word(unsigned n, unsigned c, unsigned w) {
  return 512u * (n / 8) + 32u * (4 * c + w) + 4u * (n % 8);
}
constexpr bool transpose_word_matches() {
  for (int n = 0; n < 128; ++n)
    for (int c = 0; c < 4; ++c)
      for (int w = 0; w < 4; ++w)
        if (static_cast<int>(transpose_word(n, c, w)) != wgmma_x_word(n, 32 * c + 2 * w)) return false;
  return true;
}
static_assert(transpose_word_matches(), "transpose_word is not wgmma_x_word");
static_assert(kWgmmaSbo == 8 * sizeof(__nv_bfloat16) * kStepCols && kStepCols == 128,
              "wgmma's descriptor steps over 8 staged rows of one 128-column step");

// The bulk product: x in core-matrix order in global memory (launch_gemm_tiled rearranges it), step
// s of x block b at (b * steps + s) * 8 XB * kStepCols bfloat16, one bulk copy per step.
__host__ __device__ constexpr int64_t bulk_x_step_elems(int xb) { return int64_t{8} * xb * kStepCols; }

// bfloat16 of one K part's x stages.
constexpr size_t x_part_elems(GemmProduct p, int xb) {
  const int core_stages = p == GemmProduct::kWgmmaTranspose ? kXCoreStages : 0;
  return static_cast<size_t>(8 * xb) * (x_copy_stages(p) * x_copy_pitch(p) + core_stages * kStepCols);
}

// Dynamic shared memory: KW parts' x stages, reused for the K-part sums at the end.
constexpr size_t gemm_smem_bytes(int tw, int xb, int kw, GemmProduct p) {
  const size_t x_bytes = sizeof(__nv_bfloat16) * static_cast<size_t>(kw) * x_part_elems(p, xb);
  const size_t sum_bytes = sizeof(float) * static_cast<size_t>(kw - 1) * (kWarps / kw) * tw * xb * 4 * 32;
  return x_bytes > sum_bytes ? x_bytes : sum_bytes;
}

// 16 bytes global -> shared, zero-filled when `valid` is false (cp.async with src-size 0).
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, bool valid) {
  const uint32_t dst = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(dst), "l"(gmem), "r"(valid ? 16 : 0));
}
// 4 bytes global -> shared (through L1: the wgmma staging reads each 16-byte chunk of x as four
// words), zero-filled when `valid` is false.
__device__ __forceinline__ void cp_async4(void* smem, const void* gmem, bool valid) {
  const uint32_t dst = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;" ::"r"(dst), "l"(gmem), "r"(valid ? 4 : 0));
}
// 16 bytes to shared memory in one st.shared.v4. (The transposition's plain uint4 stores, whose
// four words come from four loads, were split by ptxas into one 16-byte and twelve 4-byte stores,
// 4-way bank conflicts each: the twenty-fifth session's SASS and ncu.)
__device__ __forceinline__ void st_shared_v4(void* smem, const uint4& v) {
  const uint32_t dst = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  asm volatile("st.shared.v4.b32 [%0], {%1, %2, %3, %4};" ::"r"(dst), "r"(v.x), "r"(v.y), "r"(v.z), "r"(v.w)
               : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;" ::"n"(N));
}

// Blocks per multiprocessor the kernel is compiled for (__launch_bounds__): two (registers capped
// at 128) where the warp tile's sums and x fragments are small enough, TW * XB <= 8 (the sums
// 4 TW XB, the ring 20 TW, the x fragments 4 XB registers), else one.
constexpr int blocks_per_sm(int tw, int xb) { return tw * xb <= 8 ? 2 : 1; }

// The warp tiles built (TW tiles per warp, XB blocks of 8 rows of x). mma.sync: 2 x 8 and 4 x 4
// (one block per multiprocessor), 2 x 4 and 1 x 8 (two). wgmma (n = 8 XB rows of x per
// instruction): 2 x 4 and 1 x 8 (two blocks per multiprocessor), 2 x 8 and 1 x 16 (one); with
// word copies also 1 and 2 tiles x 1 and 2 (8 or 16 rows of x: the GEMV's range, for the sweep
// against it; x's copy is small there, so the transposing form is not built for them); with the
// transposing form also 2 x 16 (2 x 128: each weight word decoded once for 128 rows of x with 256
// weight rows sharing each staged step of x; sm_90a ptxas: 255 registers, no spill; 198 KiB of
// x stages, so one K part); with the bulk product 2 x 8, 2 x 16 and 1 x 16 (1 x 128: 128 weight
// rows per block, so twice the output blocks of 2 x 128 on a weight).
constexpr bool warp_tile_built(int tw, int xb, GemmProduct p) {
  if (p == GemmProduct::kMmaSync) {
    return (tw == 2 && xb == 8) || (tw == 4 && xb == 4) || (tw == 2 && xb == 4) || (tw == 1 && xb == 8);
  }
  if (p == GemmProduct::kWgmmaBulk) return (tw == 2 && (xb == 8 || xb == 16)) || (tw == 1 && xb == 16);
  return (tw == 2 && xb == 4) || (tw == 1 && xb == 8) || (tw == 2 && xb == 8) || (tw == 1 && xb == 16) ||
         (p == GemmProduct::kWgmmaTranspose && tw == 2 && xb == 16) ||
         (p == GemmProduct::kWgmmaWordCopy && (tw == 1 || tw == 2) && (xb == 1 || xb == 2));
}

// K parts a wgmma block may have: a warpgroup (4 warps: one wgmma) must lie in one K part, so
// 8 / KW warps along N must be a multiple of 4.
// The bulk product takes one: one thread of the block issues its copies.
constexpr bool k_parts_ok(int kw, GemmProduct p) {
  return kw == 1 || (p != GemmProduct::kWgmmaBulk && (kw == 2 || (kw == 4 && !is_wgmma(p))));
}

// 16-column slices a wgmma warpgroup decodes before committing their products as one group
// (GemmTiledConfig::j_group): 1 everywhere; 2 for the transposing product with the 2 x 32, 2 x 64,
// 1 x 128 and 2 x 128 warp tiles, and for the bulk product's tiles (a deeper tensor-core queue: up
// to 4 slices' wgmmas in flight, the next group decoding meanwhile, at 8 TW more A registers).
// Four were built in the twenty-eighth session and measured slower than two everywhere
// (docs/fp4_gpu.md), so they are not.
constexpr bool j_group_built(int jg, int tw, int xb, GemmProduct p) {
  const bool two_ok = (tw == 2 && (xb == 4 || xb == 8 || xb == 16)) || (tw == 1 && xb == 16);
  return jg == 1 || (jg == 2 && (p == GemmProduct::kWgmmaTranspose || p == GemmProduct::kWgmmaBulk) && two_ok);
}

// Publishing a block's sums for another block to add (split-K and stream-K): thread th's sums
// acc[u][i][0..3] lie as one float4 at float4 index (u XB + i) threads + th of the block's slot
// (`slot`, 16-byte aligned; `threads` the threads that publish), so that a warp moves 512
// contiguous bytes per instruction. publish_sums writes them (where `write`), then counts the
// block's arrival at *counter; returns, the same in every thread, whether the block was the last of
// `blocks` to arrive (then the others' sums are visible to it). Every thread of the block calls it.
template <int TW, int XB>
__device__ __forceinline__ bool publish_sums(const float (&acc)[TW][XB][4], float* slot, int64_t threads, int th,
                                             bool write, int* counter, int64_t blocks) {
  if (write) {
    float4* dst = reinterpret_cast<float4*>(slot) + th;
#pragma unroll
    for (int u = 0; u < TW; ++u)
#pragma unroll
      for (int i = 0; i < XB; ++i)
        dst[(u * XB + i) * threads] = make_float4(acc[u][i][0], acc[u][i][1], acc[u][i][2], acc[u][i][3]);
  }
  __threadfence();  // the sums are visible device-wide before the arrival is counted
  __syncthreads();
  __shared__ int is_last;
  if (threadIdx.x == 0) is_last = atomicAdd(counter, 1) == blocks - 1;
  __syncthreads();
  if (!is_last) return false;
  __threadfence();
  return true;
}
// acc = 0, then add_published adds the sums published in `slot` (L2 reads: other blocks wrote them).
template <int TW, int XB>
__device__ __forceinline__ void zero_sums(float (&acc)[TW][XB][4]) {
#pragma unroll
  for (int u = 0; u < TW; ++u)
#pragma unroll
    for (int i = 0; i < XB; ++i) acc[u][i][0] = acc[u][i][1] = acc[u][i][2] = acc[u][i][3] = 0.0f;
}
template <int TW, int XB>
__device__ __forceinline__ void add_published(float (&acc)[TW][XB][4], const float* slot, int64_t threads, int th) {
  const float4* src = reinterpret_cast<const float4*>(slot) + th;
#pragma unroll
  for (int u = 0; u < TW; ++u)
#pragma unroll
    for (int i = 0; i < XB; ++i) {
      const float4 v = __ldcg(src + (u * XB + i) * threads);
      acc[u][i][0] += v.x;
      acc[u][i][1] += v.y;
      acc[u][i][2] += v.z;
      acc[u][i][3] += v.w;
    }
}

// With args.splits > 1: part 0's warps publish their sums, and the block that finishes its output
// block last adds every split's sums (its own included) in split order into `acc`. Returns
// whether this block holds the final sums. Every thread of the block calls it.
template <int TW, int XB>
__device__ __forceinline__ bool gather_splits(float (&acc)[TW][XB][4], const TiledLinearArgs& args, int part,
                                              int wn, int lane) {
  if (args.splits <= 1) return true;
  const int64_t threads0 = static_cast<int64_t>(args.rw) * 32;  // part 0's threads
  constexpr int kSums = TW * XB * 4;
  const int th = wn * 32 + lane;
  float* slot0 = args.partials + static_cast<int64_t>(blockIdx.x) * args.splits * kSums * threads0;
  float* mine = slot0 + blockIdx.y * kSums * threads0;
  if (!publish_sums(acc, mine, threads0, th, part == 0, args.arrivals + blockIdx.x, args.splits)) return false;
  if (part == 0) {
    zero_sums(acc);
    for (int sp = 0; sp < args.splits; ++sp) add_published(acc, slot0 + sp * kSums * threads0, threads0, th);
  }
  return true;
}

// Stream-K (one K part): this block's sums acc of output block ob, the part of its K steps that
// the block's units cover (`head`: ob is the block's first output block). Where one block
// covered all of ob, returns true at once; else each block that covered part of it publishes its
// sums in its slot (two per block: its first output block's, its last's), and the last to finish
// adds every such block's sums, in block order (deterministic), into acc and returns true. Every
// thread of the block calls it.
template <int TW, int XB>
__device__ __forceinline__ bool streamk_gather(float (&acc)[TW][XB][4], const TiledLinearArgs& args, int64_t ob,
                                               bool head, int wn, int lane) {
  const int64_t steps = args.steps, units = args.out_blocks * steps, blocks = gridDim.x;
  auto owner = [&](int64_t unit) { return ((unit + 1) * blocks - 1) / units; };  // the block whose units hold it
  const int64_t first = owner(ob * steps), last = owner((ob + 1) * steps - 1);
  if (first == last) return true;
  constexpr int kSums = TW * XB * 4;
  const int64_t threads = static_cast<int64_t>(args.rw) * 32;
  const int th = wn * 32 + lane;
  auto slot = [&](int64_t block, bool first_ob) {
    return args.partials + (2 * block + (first_ob ? 0 : 1)) * kSums * threads;
  };
  if (!publish_sums(acc, slot(blockIdx.x, head), threads, th, true, args.arrivals + ob, last - first + 1)) return false;
  zero_sums(acc);
  for (int64_t c = first; c <= last; ++c) add_published(acc, slot(c, c * units / blocks / steps == ob), threads, th);
  return true;
}

// Stream-K in thread-block clusters (kStreamKCluster): the cluster's blocks are the whole workers
// of one output block, block rank r holding the sums acc of the r-th share of its K steps. Each
// block leaves its sums in its own shared memory (the x stages, free after gemm_block_sums); after
// a cluster barrier warp w of the block of rank w % ranks adds every rank's sums at its own
// positions, in rank order (streamk_gather's order: the same result), reading the other blocks'
// shared memory (distributed shared memory); a second barrier keeps each block's shared memory
// until every reader is done. Returns whether this warp holds final sums to store. Every thread of
// the block calls it; sm_90 (other targets trap: the host launches it on wgmma builds only).
template <int TW, int XB>
__device__ __forceinline__ bool cluster_gather(float (&acc)[TW][XB][4]) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  namespace cg = cooperative_groups;
  extern __shared__ __align__(128) unsigned char dyn_smem[];
  const cg::cluster_group cluster = cg::this_cluster();
  const unsigned ranks = cluster.num_blocks(), rank = cluster.block_rank();
  const int threads = static_cast<int>(blockDim.x), th = static_cast<int>(threadIdx.x);
  float4* mine = reinterpret_cast<float4*>(dyn_smem);
#pragma unroll
  for (int u = 0; u < TW; ++u)
#pragma unroll
    for (int i = 0; i < XB; ++i)
      mine[(u * XB + i) * threads + th] = make_float4(acc[u][i][0], acc[u][i][1], acc[u][i][2], acc[u][i][3]);
  cluster.sync();
  const bool owner = static_cast<unsigned>(th >> 5) % ranks == rank;
  if (owner) {
    zero_sums(acc);
    for (unsigned r = 0; r < ranks; ++r) {
      const float4* src = cluster.map_shared_rank(mine, r) + th;
#pragma unroll
      for (int u = 0; u < TW; ++u)
#pragma unroll
        for (int i = 0; i < XB; ++i) {
          const float4 v = src[(u * XB + i) * threads];
          acc[u][i][0] += v.x;
          acc[u][i][1] += v.y;
          acc[u][i][2] += v.z;
          acc[u][i][3] += v.w;
        }
    }
  }
  cluster.sync();
  return owner;
#else
  __trap();
  return false;
#endif
}

// One block's sums acc for output block `ob` (x block ob % m_blocks; warp w's weight tiles
// TW ((ob / m_blocks) WN + w % WN) + u) over its K part's steps s_begin .. s_begin + n_steps - 1; the
// pipeline runs loop_steps steps (every warp of the block the same number: its barriers must
// match), a K part with fewer skipping the work of the extra ones. P: the products by mma.sync or
// by wgmma (sm_90a; KW 1 or 2, so that each warpgroup lies in one K part), and how x is staged for
// them; JG: the wgmma slices per group (j_group_built). Ends with every copy landed and a barrier:
// the x stages are free again.
template <Format F, int TW, int XB, GemmProduct P, int JG>
__device__ __forceinline__ void gemm_block_sums(float (&acc)[TW][XB][4], const TiledLinearArgs& args, unsigned ob,
                                                int s_begin, int n_steps, int loop_steps) {
  static_assert(F != Format::NF4, "nf4 decodes through a shared-memory table: the GEMV path");
  constexpr bool kWg = is_wgmma(P), kTranspose = P == GemmProduct::kWgmmaTranspose;
  constexpr bool kBulk = P == GemmProduct::kWgmmaBulk;
  constexpr int kBlockRows = 8 * XB;                           // rows of x per block
  constexpr int kXPitchP = x_copy_pitch(P);                    // bfloat16 per copied row
  constexpr int kXStageElems = kBlockRows * kXPitchP;          // one copied step of one K part
  constexpr int kXStages = x_copy_stages(P);
  constexpr int kCoreStageElems = kBlockRows * kStepCols;      // kTranspose: one step of core matrices
  constexpr int kXCopyAhead = x_copy_ahead(P);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const int wn = warp % args.rw, part = warp / args.rw;
  // 32-bit unsigned block arithmetic (launch_gemm_tiled checks that the output blocks fit 31 bits):
  // 64-bit divisions here cost the main loop registers
  const int64_t tile0 = (static_cast<int64_t>(ob / args.m_blocks) * args.rw + wn) * TW;
  const int64_t row_first = static_cast<int64_t>(ob % args.m_blocks) * kBlockRows;
  const bool has_tile = tile0 < args.n_tiles;

  extern __shared__ __align__(128) unsigned char dyn_smem[];
  __nv_bfloat16* xs = reinterpret_cast<__nv_bfloat16*>(dyn_smem) + static_cast<size_t>(part) * x_part_elems(P, XB);
  __nv_bfloat16* x_core = xs + kXStages * kXStageElems;  // kTranspose: kXCoreStages steps of core matrices

  // This K part's threads copy x step s into stage buffer s % kXStages. mma.sync and the
  // transposing wgmma: chunk q of the rows x 16 chunks of 16 bytes is row q / 16, columns
  // 8 (q % 16) .. + 7, at a kXPitchP pitch. wgmma's word copies: word w (two columns) of the stage
  // is row wgmma_x_word_row(w), columns wgmma_x_word_col(w), + 1 (fp4_wgmma_cuda.h: wgmma's core
  // matrices in A's column order).
  // Index arithmetic in the copy and the transposition is unsigned: q / 16 and q % 16 are then
  // a shift and a mask, without the sign fix-ups the signed forms took in every step's SASS.
  // The bulk product: thread 0 copies step s's block of the rearranged x (bulk_x_step_elems) into
  // stage s % kXStages with one bulk copy that completes the phase of the stage's barrier
  // x_full[s % kXStages]; the barriers are set up for each call (the phase of step s is then
  // (s / kXStages) % 2) and invalidated at its end.
  const int part_thread = threadIdx.x - part * args.rw * 32, part_threads = args.rw * 32;
  const __nv_bfloat16* x = static_cast<const __nv_bfloat16*>(args.x);
  __shared__ __align__(8) uint64_t x_full[kBulk ? kXStages : 1];
  auto full_bar = [&](int s) { return static_cast<uint32_t>(__cvta_generic_to_shared(&x_full[s % kXStages])); };
  auto load_x_step = [&](int s) {
    __nv_bfloat16* dst = xs + (s % kXStages) * kXStageElems;
    const __nv_bfloat16* x_step = x + static_cast<int64_t>(s_begin + s) * kStepCols;
    if constexpr (kBulk) {
      if (threadIdx.x == 0) {
        const int64_t step = static_cast<int64_t>(ob % args.m_blocks) * args.steps + s_begin + s;
        bulk_copy_to_shared(static_cast<uint32_t>(__cvta_generic_to_shared(dst)), x + step * bulk_x_step_elems(XB),
                            static_cast<uint32_t>(sizeof(__nv_bfloat16) * bulk_x_step_elems(XB)), full_bar(s));
      }
    } else if constexpr (P == GemmProduct::kWgmmaWordCopy) {
      for (int w = part_thread; w < kBlockRows * kStepCols / 2; w += part_threads) {
        const int64_t row = row_first + wgmma_x_word_row(w);
        const bool valid = row < args.m;
        cp_async4(dst + 2 * w, x_step + (valid ? row : 0) * args.x_stride + wgmma_x_word_col(w), valid);
      }
    } else {
      for (unsigned q = part_thread; q < kBlockRows * kChunksPerRow; q += part_threads) {
        const unsigned r = q / kChunksPerRow, c = q % kChunksPerRow;
        const int64_t row = row_first + r;
        const bool valid = row < args.m;
        cp_async16(dst + r * kXPitchP + 8 * c, x_step + (valid ? row : 0) * args.x_stride + 8 * c, valid);
      }
    }
  };
  // kTranspose: this K part's threads rewrite step s from its copy into core-matrix stage
  // s % kXCoreStages. Unit u is row n = 8 (u / 32) + u % 8 and 32-column group c = (u / 8) % 4: four
  // 16-byte chunks t of the copied row, whose words v go to core matrix row (4 c + v, n) at
  // position t (wgmma_x_word). A quarter-warp reads 8 rows at one column (8 bank groups at the
  // 272-byte pitch) and writes 128 contiguous bytes.
  auto transpose_x_step = [&](int s) {
    const __nv_bfloat16* src = xs + (s % kXStages) * kXStageElems;
    __nv_bfloat16* dst = x_core + (s % kXCoreStages) * kCoreStageElems;
    for (unsigned u = part_thread; u < kBlockRows * 4; u += part_threads) {
      const unsigned n = 8 * (u / 32) + u % 8, c = (u / 8) % 4;
      uint4 v[4];
#pragma unroll
      for (int t = 0; t < 4; ++t) v[t] = *reinterpret_cast<const uint4*>(src + n * kXPitchP + 32 * c + 8 * t);
#pragma unroll
      for (int w = 0; w < 4; ++w) {
        st_shared_v4(dst + 2 * transpose_word(n, c, w),
                     make_uint4(word_of(v[0], w), word_of(v[1], w), word_of(v[2], w), word_of(v[3], w)));
      }
    }
  };

  zero_sums(acc);

  // Weights: the GEMV's register ring (WeightRing), two steps ahead. With mma.sync a warp without
  // tiles loads nothing; with wgmma every warp of a warpgroup must take part in its wgmma, so
  // such a warp decodes the layout's first tile (its sums are not written).
  const bool loads = kWg || has_tile;
  if constexpr (kBulk) {
    if (threadIdx.x == 0) {
      for (int i = 0; i < kXStages; ++i) mbarrier_init(full_bar(i), 1);
      mbarrier_init_fence();
    }
    __syncthreads();  // the barriers are set up before any thread waits on them
  }
  WeightRing<F, kWeightStages, TW> ring(args, has_tile ? tile0 : 0, s_begin, lane);
#pragma unroll
  for (int i = 0; i < kWeightStages; ++i) {
    if (loads && i < n_steps) ring.load(i, args);
    ring.advance(args);
  }
  // The bulk product's rearranged x and stream-K counts come from the kernel before this one
  // (launch_gemm_tiled's pack_x_core_kernel), which may still run: the weights' first steps above
  // load meanwhile.
  if constexpr (kBulk) grid_dependency_wait();
#pragma unroll
  for (int s = 0; s < kXCopyAhead; ++s) {
    if (s < n_steps) load_x_step(s);
    cp_async_commit();
  }
  if constexpr (kTranspose) {
    cp_async_wait<kXCopyAhead - 1>();
    __syncthreads();  // step 0's copy is in shared memory
    if (n_steps > 0) transpose_x_step(0);
  }

  // Every warp runs loop_steps steps (the block's barriers must match); a K part with fewer
  // steps, or (mma.sync) a warp without tiles, skips the work of the extra ones. Step s uses ring
  // slot I = s % kWeightStages, a compile-time index (the loop is unrolled by the ring's depth)
  // so that the ring stays in registers.
  // With kTranspose, step s first transposes step s + 1's copy (landed before this step's barrier)
  // into core stage (s + 1) % kXCoreStages, whose last reads (step s - 2's wgmmas) every warpgroup
  // waited for in step s - 1, while step s - 1's last wgmma may still run; the next step's barrier
  // publishes it. (Inside the loop over j, between a wgmma and its wait, ptxas serializes every
  // wgmma of the kernel: seen in the SASS, one wait_group 0 after each.)
  auto step = [&](int s, auto slot) {
    constexpr int I = decltype(slot)::value;
    if constexpr (!kBulk) {
      cp_async_wait<kXAhead - 1>();
      if constexpr (kWg) fence_proxy_async_shared();
    }
    __syncthreads();  // step s's x is in shared memory; copy stage (s + kXCopyAhead) % kXStages is free again
    if (s + kXCopyAhead < n_steps) load_x_step(s + kXCopyAhead);
    cp_async_commit();
    if (s >= n_steps || !loads) return;
    if constexpr (kBulk) mbarrier_wait(full_bar(s), static_cast<uint32_t>(s / kXStages) & 1u);
    if constexpr (kTranspose) {
      if (s + 1 < n_steps) transpose_x_step(s + 1);
    }
    if constexpr (kWg) {
      // JG slices of 16 columns j at a time: decode the TW tiles' A registers of each, then one
      // wgmma per tile and slice on the stage's core matrices of columns 16 j .. 16 j + 15, one
      // commit group; the next group's decode runs while it computes (wait_group 1: the group
      // before is done, so its A registers are free again).
      static_assert(8 % JG == 0, "JG slices per group divide a step's 8 slices");
      const __nv_bfloat16* core = kTranspose ? x_core + (s % kXCoreStages) * kCoreStageElems
                                             : xs + (s % kXStages) * kXStageElems;  // word / bulk copies
      const uint64_t desc0 =
          wgmma_desc_k_major(static_cast<uint32_t>(__cvta_generic_to_shared(core)), kWgmmaLbo, kWgmmaSbo);
#pragma unroll
      for (int j0 = 0; j0 < 8; j0 += JG) {
        uint32_t a[JG][TW][4];
#pragma unroll
        for (int jj = 0; jj < JG; ++jj) {
          const int j = j0 + jj;
#pragma unroll
          for (int u = 0; u < TW; ++u) {
            decode_word<F>(word_of(j < 4 ? ring.c0[I][u] : ring.c1[I][u], j & 3), ring.sc[I][u], j, nullptr,
                           a[jj][u]);
          }
        }
        wgmma_fence();
#pragma unroll
        for (int jj = 0; jj < JG; ++jj) {
          const uint64_t desc = wgmma_desc_advance(desc0, kWgmmaSliceBytes * (j0 + jj));
#pragma unroll
          for (int u = 0; u < TW; ++u) WgmmaBf16<XB>::mma(acc[u], a[jj][u], desc);
        }
        wgmma_commit();
        wgmma_wait<1>();
      }
    } else {
      const __nv_bfloat16* xstep = xs + (s % kXStages) * kXStageElems + g * kXPitch + 8 * t;
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        // B fragments of chunk c for the XB blocks of x: row 8 xb + g, columns 32 c + 8 t .. + 7
        // (words 0, 1 feed mma 2c, words 2, 3 mma 2c + 1; fp4_tiled_layout.h).
        uint4 b[XB];
#pragma unroll
        for (int xb = 0; xb < XB; ++xb) b[xb] = *reinterpret_cast<const uint4*>(xstep + xb * 8 * kXPitch + 32 * c);
#pragma unroll
        for (int jj = 0; jj < 2; ++jj) {
          const int j = 2 * c + jj;
#pragma unroll
          for (int u = 0; u < TW; ++u) {
            uint32_t a[4];
            decode_word<F>(word_of(j < 4 ? ring.c0[I][u] : ring.c1[I][u], j & 3), ring.sc[I][u], j, nullptr, a);
#pragma unroll
            for (int xb = 0; xb < XB; ++xb) {
              MmaType<at::BFloat16>::mma(acc[u][xb], a, word_of(b[xb], 2 * jj), word_of(b[xb], 2 * jj + 1));
            }
          }
        }
      }
    }
    if (s + kWeightStages < n_steps) ring.load(I, args);
    ring.advance(args);
  };
  static_assert(kWeightStages == 2, "the loop below is unrolled by the ring's depth");
  for (int s = 0; s < loop_steps; s += kWeightStages) {
    step(s, std::integral_constant<int, 0>{});
    if (s + 1 < loop_steps) step(s + 1, std::integral_constant<int, 1>{});
  }
  if constexpr (kWg) {
    wgmma_wait<0>();
#pragma unroll
    for (int u = 0; u < TW; ++u) wgmma_fence_operands(acc[u]);
  }
  cp_async_wait<0>();
  __syncthreads();  // the x stages are reused for the K-part sums, or by the next output block
  if constexpr (kBulk) {
    if (threadIdx.x == 0) {  // every copy has landed (each step waited for its own)
      for (int i = 0; i < kXStages; ++i) mbarrier_inval(full_bar(i));
    }
  }
}

// Grid, without stream-K: (ceil(n_tiles / (TW WN)) * m_blocks, splits) blocks (m_blocks =
// ceil(m / (8 XB)), the x block varying fastest along x), 256 threads; block (o, y) computes
// output block o, warp w its K part y * KW + w / WN of KW * splits (args.steps_per_part =
// ceil(steps / (KW * splits)) steps each). args.rw = WN, args.kw = KW.
// With kStreamK (KW 1): gridDim.x blocks share args.out_blocks * steps units (an output block's
// K steps in order, output blocks one after another) evenly, block b taking units b * U /
// gridDim.x up to the next block's first; streamk_gather adds the pieces of an output block that
// more than one block computed (kCluster: cluster_gather, one output block per cluster). A template
// argument, not a run-time branch: with both paths in one kernel ptxas serialized every wgmma and
// spilled.
template <Format F, bool kGelu, int TW, int XB, GemmProduct P, bool kStreamK, int JG, bool kCluster>
__global__ void __launch_bounds__(kWarps * 32, blocks_per_sm(TW, XB)) gemm_tiled_kernel(const TiledLinearArgs args) {
  extern __shared__ __align__(128) unsigned char dyn_smem[];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int wn = warp % args.rw, part = warp / args.rw;
  float acc[TW][XB][4];
  auto store = [&](unsigned ob) {
    const int64_t tile0 = (static_cast<int64_t>(ob / args.m_blocks) * args.rw + wn) * TW;
    if (part == 0 && tile0 < args.n_tiles) {
      store_outputs<at::BFloat16, kGelu, false>(acc, args, tile0, static_cast<int64_t>(ob % args.m_blocks) * (8 * XB),
                                         lane >> 2, lane & 3);
    }
  };
  if constexpr (kStreamK) {
    const int64_t steps = args.steps, units = args.out_blocks * steps, blocks = gridDim.x;
    const int64_t lo = blockIdx.x * units / blocks, hi = (blockIdx.x + int64_t{1}) * units / blocks;
    for (int64_t u = lo; u < hi;) {
      const int64_t ob = u / steps, s0 = u - ob * steps, n = min(steps - s0, hi - u);
      gemm_block_sums<F, TW, XB, P, JG>(acc, args, static_cast<unsigned>(ob), static_cast<int>(s0),
                                        static_cast<int>(n), static_cast<int>(n));
      if constexpr (kCluster) {
        if (cluster_gather(acc)) store(static_cast<unsigned>(ob));
      } else if (streamk_gather(acc, args, ob, u == lo, wn, lane)) {
        store(static_cast<unsigned>(ob));
      }
      u += n;
    }
  } else {
    // 32-bit step counters spare registers (launch_gemm_tiled checks that K's columns fit 31 bits).
    const int steps = static_cast<int>(args.steps), steps_per_part = static_cast<int>(args.steps_per_part);
    const int s_begin = (static_cast<int>(blockIdx.y) * args.kw + part) * steps_per_part;
    const int n_steps = s_begin >= steps ? 0 : min(steps - s_begin, steps_per_part);
    gemm_block_sums<F, TW, XB, P, JG>(acc, args, blockIdx.x, s_begin, n_steps, steps_per_part);
    // K parts 1.. hand their sums to part 0 through shared memory (the x stages, free now); then
    // the splits' sums meet through global memory.
    reduce_k_parts(acc, reinterpret_cast<float*>(dyn_smem), part, args.rw, wn, args.kw, lane);
    if (gather_splits(acc, args, part, wn, lane)) store(blockIdx.x);
  }
}

// Every (TW, XB) built for either kind of product (warp_tile_built says which kind).
template <int TW, int XB>
struct WarpTile {
  static constexpr int tw = TW, xb = XB;
};
using WarpTiles = std::tuple<WarpTile<2, 8>, WarpTile<4, 4>, WarpTile<2, 4>, WarpTile<1, 8>, WarpTile<1, 16>,
                             WarpTile<2, 16>, WarpTile<1, 1>, WarpTile<2, 1>, WarpTile<1, 2>, WarpTile<2, 2>>;

// Calls fn(integral_constant<TW>, integral_constant<XB>) for the tile among Tiles equal to (tw, xb).
template <typename Fn, typename... Tiles>
void call_for_tile(int tw, int xb, Fn&& fn, std::tuple<Tiles...>*) {
  ((tw == Tiles::tw && xb == Tiles::xb
        ? (fn(std::integral_constant<int, Tiles::tw>{}, std::integral_constant<int, Tiles::xb>{}), true)
        : false) ||
   ...);
}

// Calls fn(integral_constant<TW>, integral_constant<XB>) for the warp tile (tw, xb), which must be
// built for the kind of product (the caller instantiates only the kind built for it).
template <typename Fn>
void dispatch_warp_tile(int tw, int xb, GemmProduct p, Fn&& fn) {
  TORCH_CHECK_VALUE(warp_tile_built(tw, xb, p), "fp4_linear_tiled: no GEMM with product ", static_cast<int>(p),
                    " (APT_FP4_GEMM's sixth field) built for ", tw, " tiles per warp and ", 8 * xb,
                    " rows of x per block");
  call_for_tile(tw, xb, fn, static_cast<WarpTiles*>(nullptr));
}

}  // namespace

// One launch of gemm_tiled_kernel as launch_gemm_tiled sets it up: the kernel arguments, the grid
// and dynamic shared memory, and the template arguments chosen at run time (the warp tile, the kind
// of product, stream-K, the wgmma slices per commit group), already checked against what is built.
struct GemmKernelLaunch {
  TiledLinearArgs args;
  dim3 grid;
  size_t smem;
  cudaStream_t stream;
  int tw, xb;
  GemmProduct product;
  bool stream_k;
  int j_group;
  int cluster;  // kStreamKCluster: blocks per thread-block cluster (0: no clusters)
};

// The largest cluster size, from `cluster` down to 2, at which all `clusters` thread-block clusters
// of `kernel` (`threads` threads and `smem` bytes of dynamic shared memory per block) can be
// resident on the current device at once (cudaOccupancyMaxActiveClusters); 2 where none can.
// Clusters that do not all fit run in two waves: clusters of 4 of the bulk 1 x 128 (one block per
// multiprocessor) were as slow as one worker per output block (fp4_gemm_tiled_cuda.h). Queried once
// per device, kernel, size and shared memory.
inline unsigned resident_cluster_size(void (*kernel)(TiledLinearArgs), unsigned cluster, int64_t clusters,
                                      int threads, size_t smem) {
  static std::mutex mutex;
  static std::map<std::tuple<int, const void*, unsigned, size_t>, int> active_clusters;
  int device = 0;
  C10_CUDA_CHECK(cudaGetDevice(&device));
  for (unsigned c = cluster; c > 2; --c) {
    const auto key = std::make_tuple(device, reinterpret_cast<const void*>(kernel), c, smem);
    std::lock_guard<std::mutex> lock(mutex);
    auto it = active_clusters.find(key);
    if (it == active_clusters.end()) {
      cudaLaunchAttribute attr{};
      attr.id = cudaLaunchAttributeClusterDimension;
      attr.val.clusterDim.x = c;
      attr.val.clusterDim.y = 1;
      attr.val.clusterDim.z = 1;
      cudaLaunchConfig_t config{};
      config.gridDim = dim3(static_cast<unsigned>(clusters) * c);
      config.blockDim = dim3(static_cast<unsigned>(threads));
      config.dynamicSmemBytes = smem;
      config.attrs = &attr;
      config.numAttrs = 1;
      int n = 0;
      C10_CUDA_CHECK(cudaOccupancyMaxActiveClusters(&n, kernel, &config));
      it = active_clusters.emplace(key, n).first;
    }
    if (it->second >= clusters) return c;
  }
  return std::min(cluster, 2u);
}

// Launches gemm_tiled_kernel<F, kGelu, ...> for `launch`. Instantiated once per format and
// epilogue in its own translation unit (the extern declarations below keep the others from
// compiling it again).
template <Format F, bool kGelu>
void launch_gemm_kernel(const GemmKernelLaunch& launch) {
  const TiledLinearArgs& args = launch.args;
  auto go = [&](auto kernel) {
    C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        static_cast<int>(launch.smem)));
    // clusters: one per output block, of a size at which all are resident at once (the kernel takes
    // its workers' shares of K from the grid)
    dim3 grid = launch.grid;
    unsigned cluster = static_cast<unsigned>(launch.cluster);
    if (cluster > 2) {
      cluster = resident_cluster_size(kernel, cluster, args.out_blocks, kWarps * 32, launch.smem);
      grid.x = static_cast<unsigned>(args.out_blocks) * cluster;
    }
    // the bulk product right behind the kernel that rearranges x (grid_dependency_wait)
    launch_kernel(kernel, grid, kWarps * 32, launch.smem, launch.stream, args,
                  launch.product == GemmProduct::kWgmmaBulk, cluster);
  };
  auto by_product = [&](auto tw_c, auto xb_c, auto product_c) {
    constexpr int TW = decltype(tw_c)::value, XB = decltype(xb_c)::value;
    constexpr GemmProduct P = decltype(product_c)::value;
    if constexpr (warp_tile_built(TW, XB, P)) {
      auto by_j_group = [&](auto stream_k_c) {
        constexpr bool kStreamK = decltype(stream_k_c)::value;
        auto with = [&](auto jg_c) {
          constexpr int JG = decltype(jg_c)::value;
          if constexpr (j_group_built(JG, TW, XB, P)) {
            // clusters: the bulk product with two slices per group only (launch_gemm_tiled checks)
            if constexpr (kStreamK && P == GemmProduct::kWgmmaBulk && JG == 2) {
              if (launch.cluster > 0) {
                go(gemm_tiled_kernel<F, kGelu, TW, XB, P, true, JG, true>);
                return;
              }
            }
            go(gemm_tiled_kernel<F, kGelu, TW, XB, P, kStreamK, JG, false>);
          }
        };
        if (launch.j_group == 2) with(std::integral_constant<int, 2>{});
        else with(std::integral_constant<int, 1>{});
      };
      if constexpr (P == GemmProduct::kWgmmaBulk) {
        by_j_group(std::true_type{});  // built for stream-K only (launch_gemm_tiled checks)
      } else {
        if constexpr (P == GemmProduct::kWgmmaTranspose) {
          if (launch.stream_k) {
            by_j_group(std::true_type{});
            return;
          }
        }
        by_j_group(std::false_type{});
      }
    }
  };
  dispatch_warp_tile(launch.tw, launch.xb, launch.product, [&](auto tw_c, auto xb_c) {
    using MmaSync = std::integral_constant<GemmProduct, GemmProduct::kMmaSync>;
    using WordCopy = std::integral_constant<GemmProduct, GemmProduct::kWgmmaWordCopy>;
    using Transpose = std::integral_constant<GemmProduct, GemmProduct::kWgmmaTranspose>;
    using Bulk = std::integral_constant<GemmProduct, GemmProduct::kWgmmaBulk>;
    if (launch.product == GemmProduct::kMmaSync) by_product(tw_c, xb_c, MmaSync{});
    else if (launch.product == GemmProduct::kWgmmaWordCopy) by_product(tw_c, xb_c, WordCopy{});
    else if (launch.product == GemmProduct::kWgmmaTranspose) by_product(tw_c, xb_c, Transpose{});
    else by_product(tw_c, xb_c, Bulk{});
  });
}

extern template void launch_gemm_kernel<Format::NVFP4, false>(const GemmKernelLaunch&);
extern template void launch_gemm_kernel<Format::NVFP4, true>(const GemmKernelLaunch&);
extern template void launch_gemm_kernel<Format::MXFP4, false>(const GemmKernelLaunch&);
extern template void launch_gemm_kernel<Format::MXFP4, true>(const GemmKernelLaunch&);

}  // namespace apt::fp4::cuda
