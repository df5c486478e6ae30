// CUDA kernel of apt::fp4_linear_tiled: out = x @ W.T * out_scale + bias for a weight in the
// tiled layout (fp4_tiled_layout.h), tuned for few rows of x (decoding: M <= 16 per launch
// row-block, any M by more blocks along x).
//
// The time of a small-M linear layer is the time to read its weight, so the kernel is built to
// keep many bytes in flight and spend few instructions per byte:
//  * each warp owns one or two tiles (16 weight rows each, GemvConfig::tw) and a contiguous range
//    of their 128-column steps; per step and tile every lane loads 32 bytes of codes with two
//    coalesced 16-byte loads (the warp reads one contiguous KiB) plus its scales, S steps ahead of
//    their use (a register ring); with two tiles each x value a warp loads feeds both;
//  * warps of a block share their k-range across RW tiles (x comes from L1 after the first) and
//    split K across KW warps, whose partial sums meet in shared memory: one launch, no atomics,
//    deterministic;
//  * nvfp4/mxfp4 codes decode with shift-and-mask into bfloat16 (value * 2^-126) and one paired
//    multiply by the scale word (exact); nf4 codes two at a time through a 256-entry table of
//    bfloat16 pairs in shared memory (one copy per lane: no bank conflicts) and one paired
//    multiply by the bfloat16 absmax; both feeding mma.m16n8k16 with the weights as A and 8 rows of x
//    as B; float16 / float32 x enter as 2 / 3 exact bfloat16 terms;
//  * x is read from global memory (L1) per step, double-buffered, single-buffered (for more
//    blocks per multiprocessor) or one chunk at a time (so that two tiles per warp fit the
//    registers; GemvConfig::xm); a lane's columns are four chunks of 8 (fp4_tiled_layout.h), so
//    each 16-byte x load of the warp reads 64 contiguous bytes per row of x. Two tuning-sweep
//    modes refill one buffer chunk by chunk a step ahead, from x as it is or from a copy packed
//    so that each load reads 512 contiguous bytes (half the L1 wavefronts at 16 rows).
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <tuple>
#include <type_traits>

#include "fp4/fp4_decode_cuda.h"
#include "fp4/fp4_format.h"
#include "fp4/fp4_gemm_tiled_cuda.h"
#include "fp4/fp4_linear_cuda.h"
#include "fp4/fp4_mma_cuda.h"
#include "fp4/fp4_tiled_decode_cuda.h"
#include "fp4/fp4_tiled_layout.h"

namespace apt::fp4::cuda {
namespace {

using namespace apt::fp4::tiled;

constexpr int kMaxWarps = 8;  // warps per block (RW * KW)
constexpr int kDefaultStages = 2;    // round-6 sweep: 2 stages as fast or faster than 4 at M = 1, 4, 16
constexpr int kMinStepsPerPart = 4;  // K parts keep at least this many steps each
// The SwiGLU GEMV takes its RMSNorm in the kernel up to this many rows of 16-bit x (8-row blocks);
// above (16-row blocks) ATen normalises x first. At 16 rows on 28672 x 4096 (H100, fp4_norm_fusion.py)
// the fused norm took 37.19 / 37.25 / 44.33 us (nvfp4 / mxfp4 / nf4) and the handoff 36.76 /
// 36.28 / 41.54 against 33.45 / 33.29 / 38.20 with the norm ahead (F.rms_norm); at one row the
// fused norm was level with or ahead of it (30.35 / 29.67 / 32.47 against 30.70 / 29.75 / 32.78)
// and the handoff faster.
constexpr int64_t kSwigluFusedNormMaxRows = 8;

// 16 bytes of x (kept in L1: the warps of a block read the same columns), issued in program order.
__device__ __forceinline__ uint4 load_x(const uint4* p) {
  uint4 r;
  asm volatile("ld.global.nc.v4.u32 {%0, %1, %2, %3}, [%4];" : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w) : "l"(p));
  return r;
}

// How a block reads x (GemvConfig::xm): 0 through L1, double-buffered half a step ahead; 1 the
// same with a single buffer loaded at each step, for more blocks per multiprocessor
// (min_blocks_per_sm); 2 one chunk (8 columns per lane) at a time, loaded one chunk ahead of its
// two mma, so that only two chunks of x are live (two tiles per warp, or 32 rows of x, fit); 3 a
// single buffer refilled chunk by chunk: each chunk of the next step is loaded as soon as this
// step's two mma of that chunk are issued, three chunks of work before its use (the registers of
// 1, the lead of 0); 4 the same from a copy of x packed by pack_x_kernel so that each 16-byte
// load of the warp reads 512 contiguous bytes (4 L1 wavefronts instead of 8: one per 128-byte
// line, not one per row of x).
constexpr int kXDoubleBuffer = 0, kXSingleBuffer = 1, kXPerChunk = 2, kXRolling = 3, kXPacked = 4;

// x values of one step for one lane: its 32 columns (four chunks of 8, chunk c at column 32c + 8t
// of the step) of each of its MT rows, raw 16-byte loads. x rows are padded to whole steps and
// 16-byte aligned (the host sees to it), so every load is unconditional; a lane whose row is past
// M reads row M - 1: it only feeds output columns that are never written.
template <typename T, int MT>
struct XStep {
  static constexpr int kChunkLoads = static_cast<int>(sizeof(T)) / 2;  // 16-byte loads per chunk
  static constexpr int kLoads = 4 * kChunkLoads;
  uint4 v[MT][kLoads];
  // rows[i] + col0: the lane's first column (8t) of the step in row i. Chunk c: columns 32c + 8t ..
  // 32c + 8t + 7 of the step (words 4c .. 4c + 3 of 16-bit x).
  __device__ void load_chunk(const T* const (&rows)[MT], int64_t col0, int c) {
#pragma unroll
    for (int i = 0; i < MT; ++i) {
      const uint4* p = reinterpret_cast<const uint4*>(rows[i] + col0);
#pragma unroll
      for (int u = 0; u < kChunkLoads; ++u) v[i][c * kChunkLoads + u] = load_x(p + 2 * static_cast<int>(sizeof(T)) * c + u);
    }
  }
  __device__ void load(const T* const (&rows)[MT], int64_t col0) {
#pragma unroll
    for (int c = 0; c < 4; ++c) load_chunk(rows, col0, c);
  }
  // Packed x (kXPacked, 16-bit x): chunk c of step s, row block i is the 512-byte block
  // (s * 4 + c) * MT + i after `lane_base` (this lane's 16 bytes of the block's first step).
  __device__ void load_chunk_packed(const uint4* lane_base, int64_t s, int c) {
    static_assert(kChunkLoads == 1, "packed x: 16-bit x only");
#pragma unroll
    for (int i = 0; i < MT; ++i) v[i][c] = load_x(lane_base + ((s * 4 + c) * MT + i) * kLanes);
  }
  // 32-bit word w (0..15 for 16-bit x: columns 2w, 2w+1 of the lane's; 0..31 for float32) of tile i.
  __device__ uint32_t word(int i, int w) const { return word_of(v[i][w / 4], w % 4); }
};

// acc[i] += A (decoded weights of mma j) x B (columns 4j .. 4j+3 of the lane's x block, tile i).
template <typename T, int MT>
__device__ __forceinline__ void mma_step(float (&acc)[MT][4], const uint32_t (&a)[4], const XStep<T, MT>& xs, int j) {
#pragma unroll
  for (int i = 0; i < MT; ++i) {
    if constexpr (std::is_same_v<T, at::BFloat16>) {
      MmaType<at::BFloat16>::mma(acc[i], a, xs.word(i, 2 * j), xs.word(i, 2 * j + 1));
    } else if constexpr (std::is_same_v<T, at::Half>) {
      uint32_t b0[2], b1[2];
      const uint32_t h0 = xs.word(i, 2 * j), h1 = xs.word(i, 2 * j + 1);
      const float2 f0 = __half22float2(*reinterpret_cast<const __half2*>(&h0));
      const float2 f1 = __half22float2(*reinterpret_cast<const __half2*>(&h1));
      split_bf16<2>(f0.x, f0.y, b0);
      split_bf16<2>(f1.x, f1.y, b1);
#pragma unroll
      for (int p = 0; p < 2; ++p) MmaType<at::BFloat16>::mma(acc[i], a, b0[p], b1[p]);
    } else {
      uint32_t b0[3], b1[3];
      split_bf16<3>(__uint_as_float(xs.word(i, 4 * j)), __uint_as_float(xs.word(i, 4 * j + 1)), b0);
      split_bf16<3>(__uint_as_float(xs.word(i, 4 * j + 2)), __uint_as_float(xs.word(i, 4 * j + 3)), b1);
#pragma unroll
      for (int p = 0; p < 3; ++p) MmaType<at::BFloat16>::mma(acc[i], a, b0[p], b1[p]);
    }
  }
}

// The RMSNorm's sums of squares of 16-bit x (TiledLinearArgs::rms_eps) on the tensor cores, from
// the x registers of mma j: one more mma per x tile with A = the lane's own x words (a0 = b0 and
// a2 = b1 hold row g's columns in the same order as B's column g; rows g + 8 zero) gives the
// 8 x 8 Gram matrix x x^T of the step's columns, whose diagonal (lane t = g / 2, element g % 2)
// holds row g's sum of squares (products exact in float32, summed in float32).
template <typename T, int MT>
__device__ __forceinline__ void gram_step(float (&gram)[MT][4], const XStep<T, MT>& xs, int j) {
  static_assert(sizeof(T) == 2, "the Gram matrix is taken of 16-bit x only");
#pragma unroll
  for (int i = 0; i < MT; ++i) {
    const uint32_t b0 = xs.word(i, 2 * j), b1 = xs.word(i, 2 * j + 1);
    const uint32_t a[4] = {b0, 0u, b1, 0u};
    MmaType<T>::mma(gram[i], a, b0, b1);
  }
}

// nf4's pair table in shared memory: entry b (a byte of two codes, low nibble first) is the
// bfloat16 pair (NF4[b & 15], NF4[b >> 4]); each lane has its own copy (entry b of lane l at word
// 32 b + l, in bank l), so a warp's 32 lookups never conflict.
constexpr int kNf4PairTableBytes = 256 * 32 * 4;
template <Format F>
constexpr int nf4_table_bytes() { return F == Format::NF4 ? kNf4PairTableBytes : 0; }

// All 8 mma of one step for each of the warp's TW tiles: tile u's words 0..3 in c0[u], 4..7 in
// c1[u]. XM kXPerChunk: x is loaded here, chunk c + 1 before the mma of chunk c (xrows, col0 as
// for XStep::load); kXRolling / kXPacked: xs holds this step, and refill(c) loads chunk c of the
// next step after the mma of chunk c; otherwise xs holds the whole step already. kGram and
// gram_on: gram_step's sums of squares of the step's x too.
template <Format F, typename T, int MT, int TW, int XM, bool kGram, typename Refill>
__device__ __forceinline__ void step_math(const uint4 (&c0)[TW], const uint4 (&c1)[TW], const LaneScales<F> (&sc)[TW],
                                          XStep<T, MT>& xs, const T* const (&xrows)[MT], int64_t col0,
                                          const uint32_t* nf4_lane, float (&acc)[TW][MT][4], Refill&& refill,
                                          float (&gram)[MT][4], bool gram_on) {
  if constexpr (XM == kXPerChunk) xs.load_chunk(xrows, col0, 0);
#pragma unroll
  for (int j = 0; j < 8; ++j) {
    if constexpr (XM == kXPerChunk) {
      if (j % 2 == 0 && j < 6) xs.load_chunk(xrows, col0, j / 2 + 1);
    }
#pragma unroll
    for (int u = 0; u < TW; ++u) {
      uint32_t a[4];
      decode_word<F>(word_of(j < 4 ? c0[u] : c1[u], j & 3), sc[u], j, nf4_lane, a);
      mma_step<T, MT>(acc[u], a, xs, j);
    }
    if constexpr (kGram) {
      if (gram_on) gram_step<T, MT>(gram, xs, j);
    }
    if constexpr (XM == kXRolling || XM == kXPacked) {
      if (j % 2 == 1) refill(j / 2);
    }
  }
}

// x [m, x_stride] (16-bit, x_stride16 16-byte pieces per row) in the order the kXPacked kernels
// read it: piece ((((mb * steps + s) * 4 + c) * mt + i) * 8 + g) * 4 + t holds columns 128 s + 32 c
// + 8 t .. + 7 of row (mb * mt + i) * 8 + g (zero past row m - 1), so that the 32 lanes' pieces of
// one (step, chunk, row block) are 512 contiguous bytes. One thread per piece (grid-stride).
__global__ void pack_x_kernel(const uint4* __restrict__ x, uint4* __restrict__ out, int64_t m, int64_t x_stride16,
                              int64_t steps, int mt, int64_t pieces) {
  allow_dependent_launch();
  for (int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; idx < pieces;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    int64_t q = idx;
    const int t = static_cast<int>(q & 3);
    q >>= 2;
    const int g = static_cast<int>(q & 7);
    q >>= 3;
    const int i = static_cast<int>(q % mt);
    q /= mt;
    const int c = static_cast<int>(q & 3);
    q >>= 2;
    const int64_t s = q % steps, mb = q / steps;
    const int64_t row = (mb * mt + i) * 8 + g;
    out[idx] = row < m ? x[row * x_stride16 + s * 16 + c * 4 + t] : make_uint4(0u, 0u, 0u, 0u);
  }
}

// Blocks per multiprocessor the registers must allow (__launch_bounds__): 2 for 8 rows of 16-bit
// x (128 registers), 3 with one x buffer or x per chunk (80); 16 rows: 2 with one x buffer or x
// per chunk; two tiles per warp: 2 up to 16 rows of x; 32 rows with two tiles: 1.
template <typename T, int MT, int TW, int XM>
constexpr int min_blocks_per_sm() {
  if (sizeof(T) != 2) return 1;
  if (TW == 2) return MT <= 2 ? 2 : 1;
  if (MT == 1) return XM == kXDoubleBuffer || XM >= kXRolling ? 2 : 3;  // rolling: 80 spilled 52 bytes
  return XM == kXDoubleBuffer ? 1 : 2;  // kXRolling, kXPacked: the registers of one buffer, as kXSingleBuffer
}

// Grid ceil(ceil(n_tiles / TW) / rw) * m_blocks (m_blocks = ceil(m / (8 MT)), the x block varying
// fastest, so blocks that share weights run side by side and the later ones read them from L2),
// block 32 * rw * kw threads, dynamic shared memory nf4_table_bytes<F>() + (kw - 1) * rw *
// 32 * 4 * MT * TW floats.
// Warp w: tiles TW * ((blockIdx.x / m_blocks) * rw + w % rw) + u (u < TW), K part w / rw.
// kGram: the RMSNorm's sums taken inside the main loop; kHandoff: the norm handoff
// (TiledLinearArgs::norm_sumsq read, out_sumsq written; launch_gemv).
template <Format F, typename T, int MT, int TW, int S, int XM, bool kGelu, bool kGram, bool kHandoff>
__global__ void __launch_bounds__(kMaxWarps * 32, (min_blocks_per_sm<T, MT, TW, XM>()))
    gemv_tiled_kernel(const TiledLinearArgs args) {
  static_assert(TW == 1 || XM == kXPerChunk, "two tiles per warp fit the registers with x per chunk only");
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const int rt = warp % args.rw, part = warp / args.rw;
  const int64_t m_block = blockIdx.x % args.m_blocks;
  const int64_t tile0 = (static_cast<int64_t>(blockIdx.x / args.m_blocks) * args.rw + rt) * TW;
  // This warp's steps: [s_begin, s_begin + n_steps).
  const int64_t s_begin = part * args.steps_per_part;
  const int64_t n_steps =
      tile0 >= args.n_tiles || s_begin >= args.steps ? 0 : min(args.steps - s_begin, args.steps_per_part);
  const int64_t row_first = m_block * 8 * MT;  // the block's first row of x
  const int rows_here = static_cast<int>(min(static_cast<int64_t>(8 * MT), args.m - row_first));
  const T* xrows[MT];  // this lane's first column (8t) of its rows of x, at the warp's first step
#pragma unroll
  for (int i = 0; i < MT; ++i) {
    xrows[i] = static_cast<const T*>(args.x) + (row_first + min(g + 8 * i, rows_here - 1)) * args.x_stride + 8 * t;
  }
  // Dynamic shared memory: [nf4 pair table][K-part sums].
  extern __shared__ __align__(16) unsigned char dyn_smem[];
  const uint32_t* nf4_lane = reinterpret_cast<const uint32_t*>(dyn_smem) + lane;
  if constexpr (F == Format::NF4) {
    __shared__ float lut[16];
    load_nf4_lut(lut);
    __syncthreads();
    // 16-byte stores: the 32 lanes' copies of entry b are 8 consecutive uint4 of the same word.
    uint4* table = reinterpret_cast<uint4*>(dyn_smem);
    for (int i = threadIdx.x; i < kNf4PairTableBytes / 16; i += blockDim.x) {
      const int b = i >> 3;
      const uint32_t v = bf16_pack(lut[b & 15], lut[b >> 4]);
      table[i] = make_uint4(v, v, v, v);
    }
    __syncthreads();
  }

  float acc[TW][MT][4];
#pragma unroll
  for (int u = 0; u < TW; ++u)
#pragma unroll
    for (int i = 0; i < MT; ++i) acc[u][i][0] = acc[u][i][1] = acc[u][i][2] = acc[u][i][3] = 0.0f;

  // The RMSNorm (TiledLinearArgs::rms_eps): kGram (launch_gemv), the first warp along N of each K
  // part takes its part's sums of squares inside the main loop (gram_step); otherwise
  // row_sum_squares after it.
  static_assert(!kGram || sizeof(T) == 2, "the Gram matrix is taken of 16-bit x only");
  const bool gram_on = kGram && rt == 0;
  float gram[MT][4];
#pragma unroll
  for (int i = 0; i < MT; ++i) gram[i][0] = gram[i][1] = gram[i][2] = gram[i][3] = 0.0f;

  // The weights' register ring (WeightRing) and this lane's x columns at the warp's first step.
  static_assert(S % 2 == 0, "the x double buffer alternates with the step's parity");
  WeightRing<F, S, TW> ring(args, tile0, s_begin, lane);
#pragma unroll
  for (int i = 0; i < MT; ++i) xrows[i] += s_begin * kStepCols;
#pragma unroll
  for (int i = 0; i < S; ++i) {
    if (i < n_steps) ring.load(i, args);
    ring.advance(args);
  }
  if (kHandoff && args.norm_sumsq != nullptr) prefetch_sum_parts(args, row_first, rows_here);

  // Step s of this warp's range uses ring slot i (= s % S). kChecked: s may be among the last
  // 2 S steps, so the next x and the ring refill are bounds-checked; other steps skip the tests.
  constexpr bool kXDouble = XM == kXDoubleBuffer;
  XStep<T, MT> xb[kXDouble ? 2 : 1];
  // kXPacked: this lane's 16 bytes of the warp's first step in the block's packed x.
  const uint4* xp_lane = static_cast<const uint4*>(args.x) + ((m_block * args.steps + s_begin) * 4 * MT) * kLanes + lane;
  if ((kXDouble || XM == kXRolling) && n_steps > 0) xb[0].load(xrows, 0);
  if constexpr (XM == kXPacked) {
    // Launched right behind pack_x_kernel (programmatic dependent launch): the weight ring above
    // is in flight; x is read once that kernel has finished and its writes are visible.
    grid_dependency_wait();
    if (n_steps > 0) {
#pragma unroll
      for (int c = 0; c < 4; ++c) xb[0].load_chunk_packed(xp_lane, 0, c);
    }
  }
  const auto no_refill = [](int) {};
  auto step = [&](auto checked, int i, int64_t s) {
    constexpr bool kChecked = decltype(checked)::value;
    // step_math on ring slot i with x buffer xs (col0 and refill as step_math takes them)
    const auto math = [&](XStep<T, MT>& xs, int64_t col0, auto&& refill) {
      step_math<F, T, MT, TW, XM, kGram>(ring.c0[i], ring.c1[i], ring.sc[i], xs, xrows, col0, nf4_lane, acc, refill,
                                         gram, gram_on);
    };
    if constexpr (kXDouble) {
      if (!kChecked || s + 1 < n_steps) xb[(i + 1) & 1].load(xrows, (s + 1) * kStepCols);
      math(xb[i & 1], 0, no_refill);
    } else if constexpr (XM == kXPerChunk) {
      math(xb[0], s * kStepCols, no_refill);
    } else if constexpr (XM == kXRolling || XM == kXPacked) {
      const bool more = !kChecked || s + 1 < n_steps;
      auto refill = [&](int c) {
        if (!more) return;
        if constexpr (XM == kXPacked) {
          xb[0].load_chunk_packed(xp_lane, s + 1, c);
        } else {
          xb[0].load_chunk(xrows, (s + 1) * kStepCols, c);
        }
      };
      math(xb[0], 0, refill);
    } else {
      xb[0].load(xrows, s * kStepCols);
      math(xb[0], 0, no_refill);
    }
    if (!kChecked || s + S < n_steps) ring.load(i, args);
    ring.advance(args);
  };
  int64_t base = 0;
  for (; base + 2 * S <= n_steps; base += S) {
#pragma unroll
    for (int i = 0; i < S; ++i) step(std::false_type{}, i, base + i);
  }
  for (; base < n_steps; base += S) {
#pragma unroll
    for (int i = 0; i < S; ++i) {
      if (base + i >= n_steps) break;
      step(std::true_type{}, i, base + i);
    }
  }

  // The norm's sums into norm_part[warp * 32 + row] (the Gram diagonals, zero from the other warps;
  // or row_sum_parts, which adds the given parts; or row_sum_squares, which reads x again), applied
  // at the store.
  __shared__ float norm_part[kMaxWarps * 32];
  const bool norm = args.rms_eps >= 0.0f;
  if (norm) {
    if constexpr (kGram) {
#pragma unroll
      for (int i = 0; i < MT; ++i) {
        if (t == g / 2) norm_part[warp * 32 + 8 * i + g] = rt == 0 ? gram[i][g % 2] : 0.0f;
      }
      __syncthreads();
    } else if (kHandoff && args.norm_sumsq != nullptr) {
      row_sum_parts(args, row_first, rows_here, norm_part);
    } else {
      row_sum_squares<T>(args, row_first, rows_here, norm_part);
    }
  }
  // K parts 1.. hand their sums to part 0 through shared memory ([(kw - 1) * rw][TW * MT * 4][32]
  // after the nf4 table).
  reduce_k_parts(acc, reinterpret_cast<float*>(dyn_smem + nf4_table_bytes<F>()), part, args.rw, rt, args.kw, lane);
  if (part != 0) return;
  store_outputs<T, kGelu, true, kHandoff>(acc, args, tile0, row_first, g, t, norm ? norm_part : nullptr);
}

// Launch shape: warps along N per block (rw), K parts (kw), pipeline stages (s), x rows per block
// as tiles of 8 (mt: 1, 2, 4, or 0 = the heuristic's: 1 up to 8 rows of x, else 2), how x is read
// (xm: kXDoubleBuffer, kXSingleBuffer, kXPerChunk, kXRolling, kXPacked, or -1 = the heuristic's),
// tiles per warp (tw: 1, 2, or 0 = the heuristic's).
struct GemvConfig {
  int rw, kw, s, mt, xm;
  bool balance;      // tiles per block chosen so the blocks spread evenly over the multiprocessors
  bool evict_first;  // weights and scales loaded with L2 evict_first (l2_stream_policy)
  int tw;
};

// Whether packed x (kXPacked) is built: for every format with 16-bit x. nf4 since the
// thirtieth session: its pair-table reads (one shared-memory load per byte of codes) go through
// the same L1/shared pipe as x's loads, whose wavefronts packing halves; on the H100 nf4 at 16 rows
// came within 10% of nvfp4 with it (fp4_linear_NVIDIA_H100_80GB_HBM3_s30_nf4.json: 2.13x against
// 2.36x bf16); nf4 keeps its unbalanced 8-warp blocks (choose_config).
constexpr bool packed_x_built(bool fp32x) { return !fp32x; }

// The kernels this file builds, by (sweep: nvfp4 with bfloat16 x; packed: packed_x_built; fp32x:
// float32 x) and launch shape. Every format and x dtype: 2 stages, 8 rows of x double-buffered,
// and for 16-bit x 16 rows with one x buffer, two buffers, two tiles per warp with x per chunk,
// or packed x; float32 x only the first. The tuning sweep's other modes (4
// stages, x per chunk with one tile, x refilled chunk by chunk, packed x at 8 rows, 32 rows) are
// built for nvfp4 with bfloat16 x only; 16 rows of x per chunk with one tile also with 4 stages
// (timed in round 15: slower than the default at M = 16).
constexpr bool kernel_built(bool sweep, bool packed, bool fp32x, int mt, int tw, int s, int xm) {
  if (tw == 2 && xm != kXPerChunk) return false;
  if (fp32x) return mt == 1 && tw == 1 && s == kDefaultStages && xm == kXDoubleBuffer;
  const bool common = s == kDefaultStages && ((mt == 1 && tw == 1 && xm == kXDoubleBuffer) ||
                                              (mt == 2 && tw == 1 && (xm == kXDoubleBuffer || xm == kXSingleBuffer)) ||
                                              (mt == 2 && tw == 1 && xm == kXPacked && packed) ||
                                              (mt == 2 && tw == 2));
  if (common || !sweep) return common;
  if (xm == kXPerChunk) return s == kDefaultStages || (tw == 1 && mt == 2);
  return tw == 1 && mt != 4 && (s == 2 || s == 4);  // kXRolling and kXPacked included
}

// The heuristic's tiles per warp for blocks of `mt` x tiles of 8 rows and `m` rows of x in all:
// two (x loaded per chunk, each x value feeding 32 weight rows) above 16 rows of x, one up to 16.
// Round-10a sweep (fp4_gemv_sweep_NVIDIA_H200_round10a.json, 16-row blocks, do_bench): at M = 64
// two tiles took 18.0 / 50.6 / 43.5 / 166.1 us on the four shapes against 18.8 / 53.4 / 50.0 /
// 184.7 us with one, at M = 32 14.1 / 31.2 / 29.2 / 97.0 against 14.3 / 34.3 / 30.4 / 100.7; at
// M = 16 one tile stays (12.0 / 21.4 / 20.4 / 63.9 against 13.3 / 21.4 / 28.9 / 63.4 us).
constexpr int default_tiles_per_warp(int mt, int64_t m) { return mt == 1 || m <= 16 ? 1 : 2; }
constexpr int default_x_mode(int mt, int tw) { return tw == 2 || mt == 4 ? kXPerChunk : (mt == 1 ? kXDoubleBuffer : kXSingleBuffer); }

// Packed x (pack_x_kernel, then the GEMV by programmatic dependent launch) for 16-row blocks with
// one tile per warp on weights of at least 512 tiles (8192 rows) and 16384 (tile, step) blocks of
// 1 KB: at 16 rows x's L1 wavefronts limit the GEMV (round 16's ncu: L1/TEX 72% busy), and packing
// halves them. Round 16d (fp4_gemv_sweep_NVIDIA_H200_round16d.json, M = 16, do_bench): 12.4 / 20.5
// / 20.4 / 54.2 us on the four shapes against 11.0 / 21.6 / 20.2 / 63.1 us: 4096 x 4096 loses the
// copy. 4096 x 14336 (256 tiles, K split 8 ways) gains nothing: round 17a
// (fp4_gemv_sweep_NVIDIA_H200_round17a.json, 9 / 12 / 16 rows) 20.1 / 20.2 / 20.2 us packed against
// 18.9 / 20.2 / 20.1 us (the same kernel timed twice in round 17b: 19.9 and 19.0 us at 9 rows).
constexpr int64_t kPackedXMinTiles = 512, kPackedXMinTileSteps = 16384;
constexpr int heuristic_x_mode(bool packed, int mt, int tw, int64_t n_tiles, int64_t steps) {
  return packed && mt == 2 && tw == 1 && n_tiles >= kPackedXMinTiles && n_tiles * steps >= kPackedXMinTileSteps
             ? kXPacked
             : default_x_mode(mt, tw);
}

// APT_FP4_GEMV="rw,kw,stages[,mt[,xm[,balance[,evict_first[,tw]]]]]" (read at each call, so tests
// can set it in-process) overrides the heuristic: for tuning sweeps. rw = kw = 0 keeps the
// heuristic's block shape, mt = 0 its rows of x, xm = -1 its x mode, tw = 0 its tiles per warp;
// balance and evict_first default to 1. A launch shape kernel_built does not build for the format
// and x dtype falls back to the heuristic's stages, x mode and tiles per warp (and 32 rows of x
// to 16).
bool env_config(GemvConfig& cfg) {
  const char* env = std::getenv("APT_FP4_GEMV");
  if (env == nullptr || *env == '\0') return false;
  int rw = 0, kw = 0, s = 0, mt = 0, xm = -1, balance = 1, evict_first = 1, tw = 0;
  const int got = std::sscanf(env, "%d,%d,%d,%d,%d,%d,%d,%d", &rw, &kw, &s, &mt, &xm, &balance, &evict_first, &tw);
  const bool shape_ok = (rw == 0 && kw == 0) || (rw >= 1 && kw >= 1 && rw * kw <= kMaxWarps);
  TORCH_CHECK_VALUE(got >= 3 && shape_ok && (mt == 0 || mt == 1 || mt == 2 || mt == 4) && xm >= -1 &&
                        xm <= kXPacked && tw >= 0 && tw <= 2,
                    "APT_FP4_GEMV: expected 'rw,kw,stages[,mt[,xm[,balance[,evict_first[,tw]]]]]' with rw * kw <= 8 "
                    "(or both 0), mt 0, 1, 2 or 4, xm in -1..4 and tw in 0..2, got '", env, "'");
  cfg = {rw, kw, s, mt, xm, balance != 0, evict_first != 0, tw};
  return true;
}

// About 16 warps per multiprocessor (each with a pipeline of loads in flight): K split only as far
// as each part keeps one pipeline's worth of steps. More than 8 rows of x: blocks of 16 rows (each
// weight decoded once for 16 rows; round-7 sweeps: at M = 16 the largest shape took 65.0 us this
// way, fp4_gemv_sweep_NVIDIA_H200_round7b.json, against 84.9 us with two 8-row blocks per tile,
// round7a). Returns a shape kernel_built builds for (sweep, packed_x_built(fp32x), fp32x).
GemvConfig choose_config(Format f, bool sweep, bool fp32x, int64_t m, int64_t n_tiles, int64_t steps, int sms) {
  // nf4 fills its 32 KB pair table once per block: it keeps blocks of 8 warps (with balance, the
  // 2-warp blocks of 14336 x 4096 ran nf4 at 1.21x bf16 against nvfp4's 2.22x in
  // fp4_linear_NVIDIA_H200.json of the round-6 session, and at 1.55x against 2.23x unbalanced in
  // fp4_gemv_sweep_NVIDIA_H200_round8a.json).
  GemvConfig cfg{0, 0, kDefaultStages, 0, -1, f != Format::NF4, true, 0};
  const bool from_env = env_config(cfg);
  if (fp32x) {
    cfg.mt = 1;
  } else if (cfg.mt == 0 || (cfg.mt == 4 && !sweep)) {
    cfg.mt = m <= 8 ? 1 : 2;
  }
  if (cfg.tw == 0) cfg.tw = fp32x ? 1 : default_tiles_per_warp(cfg.mt, m);
  const bool packed = packed_x_built(fp32x);
  if (cfg.xm < 0) cfg.xm = heuristic_x_mode(packed, cfg.mt, cfg.tw, n_tiles, steps);
  if (!kernel_built(sweep, packed, fp32x, cfg.mt, cfg.tw, cfg.s, cfg.xm)) {
    cfg.s = kDefaultStages;
    cfg.tw = fp32x ? 1 : default_tiles_per_warp(cfg.mt, m);
    cfg.xm = default_x_mode(cfg.mt, cfg.tw);
  }
  if (from_env && cfg.rw > 0) return cfg;
  const int64_t m_blocks = (m + 8 * cfg.mt - 1) / (8 * cfg.mt), units = (n_tiles + cfg.tw - 1) / cfg.tw;
  const int64_t max_kw = std::max<int64_t>(1, std::min<int64_t>(steps / kMinStepsPerPart, kMaxWarps));
  // K parts: the largest power of two up to the warps wanted per warp's tiles (round 2's sweep:
  // e.g. 896 tiles -> kw 2 beat kw 3 or 4).
  const int64_t want = (int64_t{16} * sms + units * m_blocks - 1) / (units * m_blocks);
  cfg.kw = 1;
  while (cfg.kw * 2 <= want && cfg.kw * 2 <= max_kw) cfg.kw *= 2;
  cfg.rw = kMaxWarps / cfg.kw;
  // On by default: on the round-6 sweep (fp4_gemv_sweep_NVIDIA_H200_round6.json) it took the
  // largest shape at M = 1 from 50.4 to 45.6 us and changed the others by at most a few percent.
  if (cfg.balance) {
    // The busiest multiprocessor gets ceil(blocks / sms) blocks of rw warps' tiles each: take the
    // rw that gives it the fewest (ties: the larger block). E.g. 1792 tiles on 132 SMs: rw 8 -> 2
    // blocks of 8 = 16 tiles, rw 7 -> 2 blocks of 7 = 14 (the even share is 13.6).
    int64_t best = std::numeric_limits<int64_t>::max();
    for (int rw = kMaxWarps / cfg.kw; rw >= 1; --rw) {
      const int64_t blocks = (units + rw - 1) / rw * m_blocks;
      const int64_t busiest = (blocks + sms - 1) / sms * rw;
      if (busiest < best) {
        best = busiest;
        cfg.rw = rw;
      }
    }
  }
  return cfg;
}

// Calls f(std::integral_constant<int, V>{}) for each V in Vs.
template <int... Vs, typename Fn>
void for_each_int(Fn&& f) {
  (f(std::integral_constant<int, Vs>{}), ...);
}

// Returns whether the kernel wrote args.out_sumsq (the norm handoff's kernels are built for the
// configurations the Gram's are; elsewhere the caller takes the sums, and the norm reads x).
template <Format F, typename T, int MT, bool kGelu>
bool launch_gemv(const TiledLinearArgs& args, const GemvConfig& cfg, dim3 grid, cudaStream_t stream) {
  constexpr bool kSweep = F == Format::NVFP4 && std::is_same_v<T, at::BFloat16> && !kGelu;
  constexpr bool kFp32x = std::is_same_v<T, float>;
  const int threads = 32 * cfg.rw * cfg.kw;
  const int64_t partial_bytes = cfg.kw > 1 ? sizeof(float) * (cfg.kw - 1) * cfg.rw * 32 * 4 * MT * cfg.tw : 0;
  const size_t smem = static_cast<size_t>(nf4_table_bytes<F>() + partial_bytes);
  bool launched = false, sums_written = false;
  for_each_int<2, 4>([&](auto s_c) {
    for_each_int<1, 2>([&](auto tw_c) {
      for_each_int<kXDoubleBuffer, kXSingleBuffer, kXPerChunk, kXRolling, kXPacked>([&](auto xm_c) {
        constexpr int S = decltype(s_c)::value, TW = decltype(tw_c)::value, XM = decltype(xm_c)::value;
        if constexpr (kernel_built(kSweep, packed_x_built(kFp32x), kFp32x, MT, TW, S, XM)) {
          if (launched || cfg.s != S || cfg.tw != TW || cfg.xm != XM) return;
          const auto launch = [&](auto kernel) {
            if (smem > 48 * 1024) {
              C10_CUDA_CHECK(
                  cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
            }
            // kXPacked: right behind pack_x_kernel (grid_dependency_wait)
            launch_kernel(kernel, grid, threads, smem, stream, args, XM == kXPacked);
          };
          // The RMSNorm's sums inside the main loop (kGram), and the norm handoff (kHandoff): a
          // kernel of their own each, so that the plain GEMV's code is not changed by them (as a
          // runtime flag the Gram took 2-6% at M = 1 and 12-17% at M = 16 from the plain GEMV on an
          // H100; docs/fp4_gpu_notes.md), built for the heuristic's configurations of 16-bit x
          // without GELU; any other norm call sums x after the main loop.
          constexpr bool kNormBuilt =
              !kGelu && !kFp32x && kernel_built(false, packed_x_built(false), false, MT, TW, S, XM);
          if constexpr (kNormBuilt) {
            if (args.norm_sumsq != nullptr || args.out_sumsq != nullptr) {
              launch(gemv_tiled_kernel<F, T, MT, TW, S, XM, kGelu, false, true>);
              sums_written = args.out_sumsq != nullptr;
            } else if (args.rms_eps >= 0.0f) {
              launch(gemv_tiled_kernel<F, T, MT, TW, S, XM, kGelu, true, false>);
            } else {
              launch(gemv_tiled_kernel<F, T, MT, TW, S, XM, kGelu, false, false>);
            }
          } else {
            launch(gemv_tiled_kernel<F, T, MT, TW, S, XM, kGelu, false, false>);
          }
          launched = true;
        }
      });
    });
  });
  TORCH_CHECK(launched, "fp4_linear_tiled: no kernel built for stages ", cfg.s, ", x mode ", cfg.xm, ", ", cfg.tw,
              " tiles per warp and ", 8 * MT, " rows of x");
  return sums_written;
}

// x2 [m, steps * 128] (16-bit, contiguous, 16-byte aligned) packed by pack_x_kernel on `stream`
// for blocks of 8 * mt rows.
at::Tensor pack_x(const at::Tensor& x2, int64_t m_blocks, int mt, int64_t steps, cudaStream_t stream) {
  const int64_t pieces = m_blocks * steps * 4 * mt * 32;
  at::Tensor out = at::empty({pieces * 8}, x2.options());
  pack_x_kernel<<<static_cast<unsigned>(copy_blocks(pieces, x2.get_device())), kCopyThreads, 0, stream>>>(
      static_cast<const uint4*>(x2.const_data_ptr()), static_cast<uint4*>(out.mutable_data_ptr()), x2.size(0),
      x2.size(1) / 8, steps, mt, pieces);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

// fp4_linear_tiled (gelu) and fp4_linear_tiled_swiglu (swiglu: out [..., n / 2]), with the
// RMSNorm (rms_eps) and the residual: fused into the GEMV; on the GEMM's route x is normalised by
// ATen first (rounded to x's dtype: the GEMM reads bfloat16) and the residual added by ATen after.
// rms_sumsq: the norm's sums in parts (fp4_linear_tiled's); out_sumsq (not with swiglu): where
// given, it receives the output's sums of squares per tile ([..., n_tiles] float32:
// fp4_linear_tiled_sumsq's).
at::Tensor tiled_linear_cuda(const at::Tensor& x, const at::Tensor& tiles_in, const at::Tensor& scales_in,
                             const at::Tensor& out_scale, const c10::optional<at::Tensor>& bias,
                             const std::string& fmt, int64_t n, int64_t k, bool gelu, bool swiglu,
                             c10::optional<double> rms_eps, const c10::optional<at::Tensor>& residual,
                             const c10::optional<at::Tensor>& rms_sumsq, at::Tensor* out_sumsq = nullptr) {
  const Format f = check_tiled_weight(tiles_in, scales_in, out_scale, fmt, n, k);
  const int64_t n_out = swiglu ? n / 2 : n;
  check_tiled_linear_args(x, tiles_in, bias, n, k, rms_eps, residual, swiglu ? 0 : n_out, rms_sumsq);
  if (swiglu) check_swiglu_rows(n);
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor x2 = x.reshape({-1, k}).contiguous();
  const int64_t m = x2.size(0);
  auto out_sizes = x.sizes().vec();
  out_sizes.back() = n_out;
  at::Tensor out = at::empty({m, n_out}, x.options());
  if (out_sumsq != nullptr) {
    auto sumsq_sizes = x.sizes().vec();
    sumsq_sizes.back() = tiles_in.size(0);
    *out_sumsq = at::empty(sumsq_sizes, x.options().dtype(at::kFloat));
  }
  if (m == 0) return out.view(out_sizes);
  const std::optional<GemmTiledConfig> gemm = choose_gemm(m, n, k, f, x.scalar_type(), x.get_device());
  // The norm ahead, by ATen's RMSNorm (one kernel, x rounded to its dtype after it; rms_sumsq not
  // needed): on the GEMM's route, and for the SwiGLU GEMV's 16-row blocks of 16-bit x (above
  // kSwigluFusedNormMaxRows rows), where its fused norm and the handoff lost to it in all formats.
  const bool swiglu_norm_ahead = swiglu && m > kSwigluFusedNormMaxRows && x.scalar_type() != at::kFloat;
  const bool norm_ahead = rms_eps.has_value() && (gemm || swiglu_norm_ahead);
  if (norm_ahead) x2 = at::rms_norm(x2, {k}, /*weight=*/c10::nullopt, *rms_eps);
  c10::optional<at::Tensor> sumsq2;  // rms_sumsq as [m, P], contiguous, for the fused norm
  if (rms_sumsq.has_value() && !norm_ahead) sumsq2 = rms_sumsq->reshape({m, rms_sumsq->size(-1)}).contiguous();
  // The kernel reads x in whole 16-byte-aligned steps of 128 columns: pad a K that is not a
  // multiple of 128 with zeros (one small copy; common layer widths need none).
  const int64_t x_stride = tiles_in.size(1) * kStepCols;
  if (x_stride != k || reinterpret_cast<uintptr_t>(x2.const_data_ptr()) % 16 != 0) {
    at::Tensor padded = at::zeros({m, x_stride}, x2.options());
    padded.narrow(1, 0, k).copy_(x2);
    x2 = padded;
  }
  // Tiles and scales may be any view whose per-(tile, step) block is contiguous (fp4_tile makes
  // them tile-major; a step-major copy is read in its own order).
  const int64_t entry_elems = scales_in.size(3);
  const bool inner_dense = tiles_in.stride(2) == 1 && scales_in.stride(3) == 1 &&
                           scales_in.stride(2) == entry_elems && tiles_in.stride(0) % 16 == 0 &&
                           tiles_in.stride(1) % 16 == 0 && scales_in.stride(0) % entry_elems == 0 &&
                           scales_in.stride(1) % entry_elems == 0;
  const at::Tensor tiles = inner_dense ? tiles_in : tiles_in.contiguous();
  const at::Tensor scales = inner_dense ? scales_in : scales_in.contiguous();
  at::Tensor bias_c;
  if (bias.has_value()) bias_c = bias->contiguous();

  TiledLinearArgs args{};
  args.x = x2.const_data_ptr();
  args.m = m;
  args.x_stride = x_stride;
  args.tiles = static_cast<const uint4*>(tiles.const_data_ptr());
  args.tile_stride = tiles.stride(0) / 16;
  args.step_stride = tiles.stride(1) / 16;
  args.scales = scales.const_data_ptr();
  args.sc_tile_stride = scales.stride(0) / entry_elems;
  args.sc_step_stride = scales.stride(1) / entry_elems;
  args.out_scale = out_scale.const_data_ptr<float>();
  args.bias = bias.has_value() ? bias_c.const_data_ptr() : nullptr;
  args.bias_type = !bias.has_value() || bias_c.scalar_type() == at::kFloat ? 0
                   : (bias_c.scalar_type() == at::kBFloat16 ? 1 : 2);
  args.out = out.mutable_data_ptr();
  args.rms_eps = -1.0f;  // no RMSNorm unless the GEMV takes one below
  at::Tensor residual_c;
  if (residual.has_value()) residual_c = residual->reshape({m, n_out}).contiguous();
  args.n = n;
  args.n_tiles = tiles.size(0);
  args.steps = tiles.size(1);

  auto stream = c10::cuda::getCurrentCUDAStream();
  if (gemm) {
    args.evict_first = true;
    if (!swiglu) {
      launch_gemm_tiled(args, f, gelu, *gemm, x2, stream);
      if (residual.has_value()) out.add_(residual_c);  // (store_outputs adds it in the GEMV only)
      if (out_sumsq != nullptr) out_sumsq->copy_(sumsq_parts(out.view(out_sizes)));
      return out.view(out_sizes);
    }
    // the GEMM has no SwiGLU epilogue: its [gate, up] tile pairs, then the SwiGLU by ATen
    const at::Tensor pairs = at::empty({m, n}, x.options());
    args.out = pairs.mutable_data_ptr();
    args.bias = nullptr;
    launch_gemm_tiled(args, f, false, *gemm, x2, stream);
    return swiglu_of_tiled_rows(pairs, bias).to(x.scalar_type()).view(out_sizes);
  }
  args.swiglu = swiglu;
  if (residual.has_value()) args.residual = residual_c.const_data_ptr();
  if (rms_eps.has_value() && !norm_ahead) {
    args.norm_x = x2.const_data_ptr();  // (args.x may become a packed copy below)
    args.rms_eps = static_cast<float>(*rms_eps);
    args.inv_k = 1.0f / static_cast<float>(k);
    if (sumsq2.has_value()) {
      args.norm_sumsq = sumsq2->const_data_ptr<float>();
      args.norm_parts = sumsq2->size(1);
    }
  }
  if (out_sumsq != nullptr) args.out_sumsq = out_sumsq->mutable_data_ptr<float>();
  const bool fp32x = x.scalar_type() == at::kFloat;
  const bool sweep = f == Format::NVFP4 && x.scalar_type() == at::kBFloat16 && !gelu;
  const GemvConfig cfg = choose_config(f, sweep, fp32x, m, args.n_tiles, args.steps, sm_count(x.get_device()));
  args.rw = cfg.rw;
  args.kw = cfg.kw;
  args.evict_first = cfg.evict_first;
  args.steps_per_part = (args.steps + cfg.kw - 1) / cfg.kw;
  // Grid: ceil(ceil(n_tiles / tw) / rw) blocks along N times m_blocks along x.
  const int64_t m_blocks = (m + 8 * cfg.mt - 1) / (8 * cfg.mt);
  at::Tensor x_packed;
  if (cfg.xm == kXPacked) {
    x_packed = pack_x(x2, m_blocks, cfg.mt, args.steps, stream);
    args.x = x_packed.const_data_ptr();
  }
  const int64_t tile_blocks = ((args.n_tiles + cfg.tw - 1) / cfg.tw + cfg.rw - 1) / cfg.rw;
  TORCH_CHECK_VALUE(tile_blocks * m_blocks < (int64_t{1} << 31),
                    "fp4_linear_tiled: too many rows of x for one launch; split x");
  args.m_blocks = static_cast<int>(m_blocks);
  const dim3 grid(static_cast<unsigned>(tile_blocks * m_blocks));

  bool sums_written = false;
  dispatch_format(f, [&](auto fc) {
    constexpr Format F = decltype(fc)::value;
    auto by_rows = [&](auto t_c) {
      using T = decltype(t_c);
      auto go = [&](auto mt_c) {
        constexpr int MT = decltype(mt_c)::value;
        sums_written = gelu ? launch_gemv<F, T, MT, true>(args, cfg, grid, stream)
                            : launch_gemv<F, T, MT, false>(args, cfg, grid, stream);
      };
      if constexpr (std::is_same_v<T, float>) {  // float32 x: 8 rows per block (registers)
        go(std::integral_constant<int, 1>{});
      } else if (cfg.mt == 1) {
        go(std::integral_constant<int, 1>{});
      } else if (cfg.mt == 2) {
        go(std::integral_constant<int, 2>{});
      } else {
        go(std::integral_constant<int, 4>{});
      }
    };
    if (x.scalar_type() == at::kBFloat16) {
      by_rows(at::BFloat16{});
    } else if (x.scalar_type() == at::kHalf) {
      by_rows(at::Half{});
    } else {
      by_rows(float{});
    }
  });
  if (out_sumsq != nullptr && !sums_written) out_sumsq->copy_(sumsq_parts(out.view(out_sizes)));
  return out.view(out_sizes);
}

at::Tensor fp4_linear_tiled_cuda(const at::Tensor& x, const at::Tensor& tiles, const at::Tensor& tile_scales,
                                 const at::Tensor& out_scale, const c10::optional<at::Tensor>& bias,
                                 const std::string& fmt, int64_t n, int64_t k, bool gelu,
                                 c10::optional<double> rms_eps, const c10::optional<at::Tensor>& residual,
                                 const c10::optional<at::Tensor>& rms_sumsq) {
  return tiled_linear_cuda(x, tiles, tile_scales, out_scale, bias, fmt, n, k, gelu, false, rms_eps, residual,
                           rms_sumsq);
}

std::tuple<at::Tensor, at::Tensor> fp4_linear_tiled_sumsq_cuda(
    const at::Tensor& x, const at::Tensor& tiles, const at::Tensor& tile_scales, const at::Tensor& out_scale,
    const c10::optional<at::Tensor>& bias, const std::string& fmt, int64_t n, int64_t k, bool gelu,
    c10::optional<double> rms_eps, const c10::optional<at::Tensor>& residual,
    const c10::optional<at::Tensor>& rms_sumsq) {
  at::Tensor out_sumsq;
  at::Tensor out = tiled_linear_cuda(x, tiles, tile_scales, out_scale, bias, fmt, n, k, gelu, false, rms_eps,
                                     residual, rms_sumsq, &out_sumsq);
  return {out, out_sumsq};
}

at::Tensor fp4_linear_tiled_swiglu_cuda(const at::Tensor& x, const at::Tensor& tiles, const at::Tensor& tile_scales,
                                        const at::Tensor& out_scale, const c10::optional<at::Tensor>& bias,
                                        const std::string& fmt, int64_t n, int64_t k, c10::optional<double> rms_eps,
                                        const c10::optional<at::Tensor>& rms_sumsq) {
  return tiled_linear_cuda(x, tiles, tile_scales, out_scale, bias, fmt, n, k, false, true, rms_eps, c10::nullopt,
                           rms_sumsq);
}

}  // namespace

TORCH_LIBRARY_IMPL(apt, CUDA, m) {
  m.impl("fp4_linear_tiled", &fp4_linear_tiled_cuda);
  m.impl("fp4_linear_tiled_sumsq", &fp4_linear_tiled_sumsq_cuda);
  m.impl("fp4_linear_tiled_swiglu", &fp4_linear_tiled_swiglu_cuda);
}

}  // namespace apt::fp4::cuda
