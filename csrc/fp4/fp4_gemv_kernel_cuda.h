// The kernel of apt::fp4_linear_tiled's CUDA GEMV: out = x @ W.T * out_scale + bias for a weight in
// the tiled layout (fp4_tiled_layout.h), tuned for few rows of x (decoding: M <= 16 per launch
// row-block, any M by more blocks along x). fp4_gemv_cuda.cu has the host side: the launch-shape
// heuristic, APT_FP4_GEMV, the routes and the ops. The instantiations are split over
// fp4_gemv_{nvfp4,mxfp4,nf4}_cuda.cu, one format each, so that a build compiles them in parallel
// (in one file they were a build's longest step: 128 s of sm_90a compile on one core, 2-core CPU
// machine, fifty-second session).
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
#pragma once
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "fp4/fp4_decode_cuda.h"
#include "fp4/fp4_format.h"
#include "fp4/fp4_mma_cuda.h"
#include "fp4/fp4_tiled_decode_cuda.h"
#include "fp4/fp4_tiled_layout.h"

namespace apt::fp4::cuda {

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

namespace {

constexpr int kMaxWarps = 8;  // warps per block (RW * KW)
constexpr int kDefaultStages = 2;    // round-6 sweep: 2 stages as fast or faster than 4 at M = 1, 4, 16

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

// Calls f(std::integral_constant<int, V>{}) for each V in Vs.
template <int... Vs, typename Fn>
void for_each_int(Fn&& f) {
  (f(std::integral_constant<int, Vs>{}), ...);
}

// Returns whether the kernel wrote args.out_sumsq (the norm handoff's kernels are built for the
// configurations the Gram's are; elsewhere the caller takes the sums, and the norm reads x).
template <Format F, typename T, int MT, bool kGelu>
bool launch_gemv_shape(const TiledLinearArgs& args, const GemvConfig& cfg, dim3 grid, cudaStream_t stream) {
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

}  // namespace

// Launches the GEMV for `args` (its grid and launch shape as tiled_linear_cuda chose them) with x of
// `x_dtype` on `stream`; returns whether the kernel wrote args.out_sumsq. Instantiated once per
// format in its own translation unit (the extern declarations below keep the others from
// compiling it again).
template <Format F>
bool launch_gemv(const TiledLinearArgs& args, const GemvConfig& cfg, dim3 grid, cudaStream_t stream,
                 at::ScalarType x_dtype, bool gelu) {
  bool sums_written = false;
  auto by_rows = [&](auto t_c) {
    using T = decltype(t_c);
    auto go = [&](auto mt_c) {
      constexpr int MT = decltype(mt_c)::value;
      sums_written = gelu ? launch_gemv_shape<F, T, MT, true>(args, cfg, grid, stream)
                          : launch_gemv_shape<F, T, MT, false>(args, cfg, grid, stream);
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
  if (x_dtype == at::kBFloat16) {
    by_rows(at::BFloat16{});
  } else if (x_dtype == at::kHalf) {
    by_rows(at::Half{});
  } else {
    by_rows(float{});
  }
  return sums_written;
}

extern template bool launch_gemv<Format::NVFP4>(const TiledLinearArgs&, const GemvConfig&, dim3, cudaStream_t,
                                                at::ScalarType, bool);
extern template bool launch_gemv<Format::MXFP4>(const TiledLinearArgs&, const GemvConfig&, dim3, cudaStream_t,
                                                at::ScalarType, bool);
extern template bool launch_gemv<Format::NF4>(const TiledLinearArgs&, const GemvConfig&, dim3, cudaStream_t,
                                              at::ScalarType, bool);

}  // namespace apt::fp4::cuda
