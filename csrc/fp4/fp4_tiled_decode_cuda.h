// Device pieces shared by the CUDA kernels that read the tiled FP4 layout (fp4_tiled_layout.h):
// the GEMV (fp4_gemv_kernel_cuda.h) and the GEMM for more rows of x (fp4_gemm_tiled_kernel_cuda.h). Streamed
// loads of weights and scales with an L2 cache policy, a lane's scale entry, the shift-and-mask
// decode of a stored word into mma A registers, the bias, and the kernels' arguments.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

#include "fp4/fp4_format.h"
#include "fp4/fp4_tiled_layout.h"

namespace apt::fp4::cuda {

using namespace apt::fp4::tiled;

// L2 eviction priority of the streamed weights and scales (TiledLinearArgs::evict_first): a 64-bit
// cache policy (createpolicy) for the loads' L2::cache_hint. evict_first lets the weights, read
// once, replace each other in L2 instead of what else is there (a previous kernel's dirty output,
// activations, the KV cache), which would otherwise be written back or re-read.
__device__ __forceinline__ uint64_t l2_stream_policy(bool evict_first) {
  uint64_t policy;
  if (evict_first) {
    asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;" : "=l"(policy));
  } else {
    asm volatile("createpolicy.fractional.L2::evict_normal.b64 %0, 1.0;" : "=l"(policy));
  }
  return policy;
}

// 16 bytes of streamed weights: read once, so they bypass L1. `volatile` keeps the load where the
// ring issues it (S steps before its use): the mma asm is volatile too, and without it the
// compiler may sink the load next to its first use, leaving one step's latency exposed.
__device__ __forceinline__ uint4 load_stream(const uint4* p, uint64_t policy) {
  uint4 r;
  asm volatile("ld.global.nc.L1::no_allocate.L2::cache_hint.v4.u32 {%0, %1, %2, %3}, [%4], %5;"
      : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
      : "l"(p), "l"(policy));
  return r;
}

// A lane's scale entry of one step (fp4_tiled_layout.h), as loaded: nvfp4 / mxfp4 8 bytes (x: row
// g, y: row g + 8, byte c: the block of chunk c), nf4 four floats. (Issued in program order like
// load_stream.)
template <Format F>
struct LaneScales {
  uint2 raw;
  __device__ static LaneScales load(const void* base, int64_t idx, uint64_t policy) {
    uint2 r;
    asm volatile("ld.global.nc.L2::cache_hint.v2.u32 {%0, %1}, [%2], %3;"
                 : "=r"(r.x), "=r"(r.y)
                 : "l"(static_cast<const uint2*>(base) + idx), "l"(policy));
    return {r};
  }
};
template <>
struct LaneScales<Format::NF4> {
  float4 absmax;  // row g block 0, row g block 1, row g + 8 block 0, row g + 8 block 1
  __device__ static LaneScales load(const void* base, int64_t idx, uint64_t policy) {
    float4 r;
    asm volatile("ld.global.nc.L2::cache_hint.v4.f32 {%0, %1, %2, %3}, [%4], %5;"
                 : "=f"(r.x), "=f"(r.y), "=f"(r.z), "=f"(r.w)
                 : "l"(static_cast<const float4*>(base) + idx), "l"(policy));
    return {r};
  }
};

// bfloat16 pair (v, v) of scale byte `i` of `raw` (fp4_tiled_layout.h): nvfp4 scale * 2^118,
// mxfp4 2^(e + c'). The byte_perm and multiply-add of the four bytes of a row half are shared by
// the 8 words of a step (compile-time i).
template <Format F>
__device__ __forceinline__ uint32_t scale_word(uint32_t raw, int i) {
  const uint32_t v = __byte_perm(raw, 0u, 0x4040u | static_cast<uint32_t>(i) | (static_cast<uint32_t>(i) << 8));
  if constexpr (F == Format::NVFP4) {
    return v * 16u + (kNvfp4ScaleBias << 7) * 0x10001u;
  } else {
    return v * 128u + (kMxfp4ExpBias << 7) * 0x10001u;
  }
}

// Bits `M` of `w` rotated left by R. Where none of them wraps around (M has no bit below R) a plain
// shift does, which ptxas may issue on the FMA pipe (IMAD.SHL) rather than the ALU pipe (SHF): the
// decode's shifts and masks keep the ALU pipe the busiest (round-6 and round-7 ncu profiles).
template <int R, uint32_t M>
__device__ __forceinline__ uint32_t rot_masked(uint32_t w) {
  if constexpr (R == 0) {
    return w & M;
  } else if constexpr ((M & ((1u << R) - 1u)) == 0) {
    return (w << R) & M;
  } else {
    return __funnelshift_l(w, w, R) & M;
  }
}

// The bfloat16 pair (value * 2^-126) of pair P of a stored word.
template <int P>
__device__ __forceinline__ uint32_t pair_bits(uint32_t w) {
  constexpr int kMag = mag_rot(P), kSign = sign_rot(P);
  if constexpr (kMag == kSign) {
    return rot_masked<kMag, kMagMask | kSignMask>(w);
  } else {
    return rot_masked<kMag, kMagMask>(w) | rot_masked<kSign, kSignMask>(w);
  }
}

__device__ __forceinline__ uint32_t bf16_mul2(uint32_t a, uint32_t b) {
  const __nv_bfloat162 r =
      __hmul2(*reinterpret_cast<const __nv_bfloat162*>(&a), *reinterpret_cast<const __nv_bfloat162*>(&b));
  return *reinterpret_cast<const uint32_t*>(&r);
}

__device__ __forceinline__ uint32_t bf16_pack(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&v);
}

// The four bfloat16x2 A registers of word j of a step (fp4_tiled_layout.h). nf4_lane: this lane's
// copy of the nf4 pair table (nf4 only).
template <Format F>
__device__ __forceinline__ void decode_word(uint32_t w, const LaneScales<F>& sc, int j, const uint32_t* nf4_lane,
                                            uint32_t (&a)[4]) {
  if constexpr (F == Format::NF4) {
    // Byte p holds pair p's two codes; pairs 0, 2 are row g, 1, 3 row g + 8; words 0..3 (chunks
    // 0, 1) use block 0, words 4..7 block 1.
    const float lo = j < 4 ? sc.absmax.x : sc.absmax.y, hi = j < 4 ? sc.absmax.z : sc.absmax.w;
    const uint32_t s_lo = bf16_pack(lo, lo), s_hi = bf16_pack(hi, hi);
#pragma unroll
    for (int p = 0; p < 4; ++p) {
      const uint32_t b = __byte_perm(w, 0u, 0x4440u | static_cast<uint32_t>(p));
      a[p] = bf16_mul2(nf4_lane[32 * b], (p & 1) ? s_hi : s_lo);
    }
  } else {
    // Pairs 0, 2 are row g, pairs 1, 3 row g + 8; word j is in chunk j >> 1, whose block's scale
    // is byte j >> 1 of each row half.
    const uint32_t s_lo = scale_word<F>(sc.raw.x, j >> 1), s_hi = scale_word<F>(sc.raw.y, j >> 1);
    a[0] = bf16_mul2(pair_bits<0>(w), s_lo);
    a[1] = bf16_mul2(pair_bits<1>(w), s_hi);
    a[2] = bf16_mul2(pair_bits<2>(w), s_lo);
    a[3] = bf16_mul2(pair_bits<3>(w), s_hi);
  }
}

template <typename T>
__device__ __forceinline__ float load_bias(const void* bias, int bias_type, int64_t row) {
  if (bias_type == 0) return __ldg(static_cast<const float*>(bias) + row);
  if (bias_type == 1) return __bfloat162float(static_cast<const __nv_bfloat16*>(bias)[row]);
  return __half2float(static_cast<const __half*>(bias)[row]);
}

struct TiledLinearArgs {
  const void* x;       // [m, x_stride], x_stride = steps * 128 columns (zero past k), 16-byte aligned
  int64_t m, x_stride;
  const uint4* tiles;  // (tile, step) at tiles + tile * tile_stride + step * step_stride (16-byte units)
  int64_t tile_stride, step_stride;
  const void* scales;  // a lane's scales of (tile, step) at entry tile * sc_tile_stride + step * sc_step_stride +
                       // scale_entry(format, lane) (fp4_tiled_layout.h)
  int64_t sc_tile_stride, sc_step_stride;
  const float* out_scale;
  const void* bias;  // nullptr, or [n] of bias_type (0 float32, 1 bfloat16, 2 float16)
  int bias_type;
  void* out;
  int64_t n, n_tiles, steps, steps_per_part;
  int rw, kw;  // warps along N per block (TW tiles each), K parts per tile (warps per block = rw * kw)
  int m_blocks;  // blocks along x (rows of x per block: 8 * MT in the GEMV, 8 * XB in the GEMM)
  // GEMM only: blocks along K (gridDim.y) whose sums meet through `partials` ([gridDim.x *
  // splits][sums per block] floats), the last block of each output block adding them in split
  // order; `arrivals` ([gridDim.x] int32, zero before the launch) counts the finished ones.
  // The stream-K GEMM (one K part): gridDim.x blocks share out_blocks output blocks' K steps
  // evenly; the pieces of an output block meet through `partials` ([2 gridDim.x][sums per block]
  // floats: each block's first and last output block), `arrivals` ([out_blocks] int32, zero
  // before the launch) counting them.
  int splits;
  float* partials;
  int* arrivals;
  int64_t out_blocks;
  bool evict_first;  // weights and scales loaded with L2 evict_first (l2_stream_policy)
  // The SwiGLU epilogue (GEMV only): out [m, n / 2] = silu(gate) * up, where tile rows 0..7 are
  // the gate rows 8 tile .. 8 tile + 7 and rows 8..15 the up rows n / 2 + the same (the order
  // apt_ext.fp4.tiled.tile(weight, swiglu=True) makes); bias [n] in the weight's own order.
  bool swiglu;
  // The fused RMSNorm and residual (GEMV only: store_outputs' kFused). rms_eps < 0: no norm;
  // else each output of x row r is scaled by rsqrt(sum of r's squares * inv_k + rms_eps), the sums
  // taken by the kernel: inside the main loop (gram_step), or after it from norm_x ([m, x_stride]
  // of x's dtype: x as the caller gave it, where x above is a packed copy; row_sum_squares).
  // residual: nullptr, or [m, n] (SwiGLU: not taken) of the output's dtype added to each output
  // after the bias and activation. norm_sumsq: nullptr, or the rows' sums of squares in parts
  // ([m, norm_parts] float32, each row's parts summed: fp4_linear_tiled's rms_sumsq), read instead
  // of x. out_sumsq: nullptr, or [m, n_tiles] float32 that gets the sums of squares of each x row's
  // outputs (as stored) over each tile's 16 rows (SwiGLU: not taken).
  const void* norm_x;
  float rms_eps, inv_k;
  const void* residual;
  const float* norm_sumsq;
  int64_t norm_parts;
  float* out_sumsq;
};


// A warp's register ring of S weight steps for its TW tiles (first tile `tile0`, steps from
// `s_begin`): slot i holds, per tile u, the lane's 32 bytes of codes (c0: words 0..3, c1: words
// 4..7) and its scale entry of one step. load(i, args) fills slot i with the current step,
// advance(args) moves to the next one. Tile u reads tile min(tile0 + u, last tile): a warp's tiles
// past the last read the last again (their sums are not written). With TW <= 2 a zero next-tile
// offset does that, with no per-load select (the GEMV's registers: a select spilled).
template <Format F, int S, int TW>
struct WeightRing {
  uint4 c0[S][TW], c1[S][TW];
  LaneScales<F> sc[S][TW];
  const uint4* wp;
  int64_t sp, w_next, s_next;
  int last_u;  // the warp's last tile before the layout's end, 0 .. TW - 1
  uint64_t policy;

  __device__ WeightRing(const TiledLinearArgs& a, int64_t tile0, int64_t s_begin, int lane)
      : wp(a.tiles + tile0 * a.tile_stride + s_begin * a.step_stride + lane),
        sp(tile0 * a.sc_tile_stride + s_begin * a.sc_step_stride + scale_entry(static_cast<int>(F), lane)),
        w_next(TW > 2 || tile0 + 1 < a.n_tiles ? a.tile_stride : 0),
        s_next(TW > 2 || tile0 + 1 < a.n_tiles ? a.sc_tile_stride : 0),
        last_u(static_cast<int>(min(static_cast<int64_t>(TW - 1), max(a.n_tiles - 1 - tile0, int64_t{0})))),
        policy(l2_stream_policy(a.evict_first)) {}

  __device__ __forceinline__ void load(int i, const TiledLinearArgs& a) {
#pragma unroll
    for (int u = 0; u < TW; ++u) {
      const int v = TW <= 2 || u < last_u ? u : last_u;
      c0[i][u] = load_stream(wp + v * w_next, policy);
      c1[i][u] = load_stream(wp + v * w_next + 32, policy);
      sc[i][u] = LaneScales<F>::load(a.scales, sp + v * s_next, policy);
    }
  }
  __device__ __forceinline__ void advance(const TiledLinearArgs& a) {
    wp += a.step_stride;
    sp += a.sc_step_stride;
  }
};

// K parts 1.. of a block hand a warp's sums acc[TW][XB][4] to part 0 through shared memory
// `partial` ([(kw - 1) * rw][TW * XB * 4][32] floats), in a fixed order (deterministic); part 0
// adds them. Every thread of the block calls it (it holds a __syncthreads when kw > 1).
template <int TW, int XB>
__device__ __forceinline__ void reduce_k_parts(float (&acc)[TW][XB][4], float* partial, int part, int rw, int wn,
                                               int kw, int lane) {
  if (kw <= 1) return;
  constexpr int kSums = TW * XB * 4;
  if (part > 0) {
    float* dst = partial + ((part - 1) * rw + wn) * (kSums * 32) + lane;
#pragma unroll
    for (int u = 0; u < TW; ++u)
#pragma unroll
      for (int i = 0; i < XB; ++i)
#pragma unroll
        for (int e = 0; e < 4; ++e) dst[((u * XB + i) * 4 + e) * 32] = acc[u][i][e];
  }
  __syncthreads();
  if (part == 0) {
    for (int p = 1; p < kw; ++p) {
      const float* src = partial + ((p - 1) * rw + wn) * (kSums * 32) + lane;
#pragma unroll
      for (int u = 0; u < TW; ++u)
#pragma unroll
        for (int i = 0; i < XB; ++i)
#pragma unroll
          for (int e = 0; e < 4; ++e) acc[u][i][e] += src[((u * XB + i) * 4 + e) * 32];
    }
  }
}

// sum of squares of the 16 bytes `v` of x (8 bfloat16 / float16 or 4 float32 values), in float32.
template <typename T>
__device__ __forceinline__ float sum_squares(const uint4& v) {
  const uint32_t w[4] = {v.x, v.y, v.z, v.w};
  float s = 0.0f;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    if constexpr (sizeof(T) == 4) {
      const float f = __uint_as_float(w[i]);
      s = fmaf(f, f, s);
    } else {
      float2 f;
      if constexpr (std::is_same_v<T, at::Half>) {
        f = __half22float2(*reinterpret_cast<const __half2*>(&w[i]));
      } else {
        f = make_float2(__uint_as_float(w[i] << 16), __uint_as_float(w[i] & 0xffff0000u));
      }
      s = fmaf(f.x, f.x, fmaf(f.y, f.y, s));
    }
  }
  return s;
}

// Rows r0 .. r0 + 3 (those below `rows`): each lane's sums s, added over the warp, into
// part[warp * 32 + row] (row_sum_squares' and row_sum_parts' layout).
constexpr int kSumRowsAtOnce = 4;
__device__ __forceinline__ void store_warp_row_sums(float (&s)[kSumRowsAtOnce], int r0, int rows, float* part) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
#pragma unroll
  for (int j = 0; j < kSumRowsAtOnce; ++j) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) s[j] += __shfl_xor_sync(0xffffffffu, s[j], o);
    if (lane == 0 && r0 + j < rows) part[warp * 32 + r0 + j] = s[j];
  }
}

// The RMSNorm's sums (TiledLinearArgs::rms_eps) where the GEMV does not take them inside its
// main loop (gram_step: float32 x, GELU, configurations outside the heuristic's): the block's
// threads split each of its `rows` rows of norm_x from row_first (four rows at a time, the loop
// unrolled, so a thread has several 16-byte loads in flight), each warp's sum of row r lands in
// part[warp * 32 + r] (rows <= 32). Every thread of the block calls it (it ends with a
// __syncthreads), after the main loop, when x is in L1.
template <typename T>
__device__ __forceinline__ void row_sum_squares(const TiledLinearArgs& a, int64_t row_first, int rows, float* part) {
  const int64_t pieces = a.x_stride * static_cast<int64_t>(sizeof(T)) / 16;  // 16-byte pieces per row
  const uint4* base = static_cast<const uint4*>(a.norm_x) + row_first * pieces;
  for (int r0 = 0; r0 < rows; r0 += kSumRowsAtOnce) {
    float s[kSumRowsAtOnce] = {};
#pragma unroll 4
    for (int64_t p = threadIdx.x; p < pieces; p += blockDim.x) {
      uint4 v[kSumRowsAtOnce];
#pragma unroll
      for (int j = 0; j < kSumRowsAtOnce; ++j) {
        v[j] = r0 + j < rows ? __ldg(base + (r0 + j) * pieces + p) : make_uint4(0u, 0u, 0u, 0u);
      }
#pragma unroll
      for (int j = 0; j < kSumRowsAtOnce; ++j) s[j] += sum_squares<T>(v[j]);
    }
    store_warp_row_sums(s, r0, rows, part);
  }
  __syncthreads();
}

// The RMSNorm's sums from TiledLinearArgs::norm_sumsq, as row_sum_squares leaves them (each warp's
// share of row r's parts in part[warp * 32 + r]): the block's threads split each row's parts, four
// rows at a time. Every thread of the block calls it (it ends with a __syncthreads).
__device__ __forceinline__ void row_sum_parts(const TiledLinearArgs& a, int64_t row_first, int rows, float* part) {
  const float* base = a.norm_sumsq + row_first * a.norm_parts;
  for (int r0 = 0; r0 < rows; r0 += kSumRowsAtOnce) {
    float s[kSumRowsAtOnce] = {};
    for (int64_t p = threadIdx.x; p < a.norm_parts; p += blockDim.x) {
#pragma unroll
      for (int j = 0; j < kSumRowsAtOnce; ++j) {
        if (r0 + j < rows) s[j] += __ldg(base + (r0 + j) * a.norm_parts + p);
      }
    }
    store_warp_row_sums(s, r0, rows, part);
  }
  __syncthreads();
}

// Brings the block's rows of TiledLinearArgs::norm_sumsq into L1 ahead of row_sum_parts: thread i
// prefetches the i-th 128-byte line of them (a hint: lines past the block's threads are left to
// row_sum_parts' loads). Called before the main loop, so that their latency hides behind it.
__device__ __forceinline__ void prefetch_sum_parts(const TiledLinearArgs& a, int64_t row_first, int rows) {
  const uintptr_t first = reinterpret_cast<uintptr_t>(a.norm_sumsq + row_first * a.norm_parts);
  const uintptr_t end = reinterpret_cast<uintptr_t>(a.norm_sumsq + (row_first + rows) * a.norm_parts);
  const uintptr_t line = (first & ~uintptr_t{127}) + static_cast<uintptr_t>(threadIdx.x) * 128;
  if (line < end) asm volatile("prefetch.global.L1 [%0];" ::"l"(line));
}

// Writes a warp's C fragments: acc[u][i][0..1] = (row g of tile tile0 + u, x rows row_first + 8 i
// + 2t, + 1), acc[u][i][2..3] = (row g + 8, same); out[x row * n + weight row] = sum * out_scale
// (kFused: * the row's RMSNorm factor where norm_part holds row_sum_squares' sums) + bias, then
// GELU if kGelu, then (kFused) + args.residual; with args.swiglu, silu(gate) * up of the tile's
// row pairs (g, g + 8) instead (TiledLinearArgs::swiglu). Rows past N or M and tiles past the
// last are skipped. kFused is the GEMV's: the GEMM's warp tiles (up to 16 x tiles of 8 rows)
// would spill the per-row factors and residual values, so it leaves them to the host. kSumsq
// (with kFused, not SwiGLU): args.out_sumsq, where set, gets each x row's sum of squares of the
// stored outputs of each tile (TiledLinearArgs::out_sumsq).
template <typename T, bool kGelu, bool kFused, bool kSumsq = false, int TW, int XB>
__device__ __forceinline__ void store_outputs(const float (&acc)[TW][XB][4], const TiledLinearArgs& args,
                                              int64_t tile0, int64_t row_first, int g, int t,
                                              const float* norm_part = nullptr) {
  // the output scale of each of this thread's x rows (8 i + 2 t + e): out_scale, times the row's
  // RMSNorm factor when the norm's sums were taken (the warps' sums added here, after the main
  // loop, so they hold no registers there)
  float scale[XB][2];
  const float out_scale = __ldg(args.out_scale);
#pragma unroll
  for (int i = 0; i < XB; ++i) {
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      scale[i][e] = out_scale;
      if (kFused && norm_part != nullptr) {
        float ss = 0.0f;
        for (int w = 0; w < static_cast<int>(blockDim.x >> 5); ++w) ss += norm_part[w * 32 + 8 * i + 2 * t + e];
        scale[i][e] *= rsqrtf(ss * args.inv_k + args.rms_eps);
      }
    }
  }
  if (args.swiglu) {
    // rows g and g + 8 of a tile are gate and up of output feature 8 tile + g
    const int64_t half = args.n / 2;
#pragma unroll
    for (int u = 0; u < TW; ++u) {
      const int64_t j = (tile0 + u) * 8 + g;
      if (tile0 + u >= args.n_tiles || j >= half) break;
      float bias[2] = {0.0f, 0.0f};
      if (args.bias != nullptr) {
        bias[0] = load_bias<T>(args.bias, args.bias_type, j);
        bias[1] = load_bias<T>(args.bias, args.bias_type, half + j);
      }
#pragma unroll
      for (int i = 0; i < XB; ++i) {
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int64_t col = row_first + 8 * i + 2 * t + e;
          if (col >= args.m) continue;
          const float gate = acc[u][i][e] * scale[i][e] + bias[0], up = acc[u][i][2 + e] * scale[i][e] + bias[1];
          static_cast<T*>(args.out)[col * half + j] = static_cast<T>(gate / (1.0f + __expf(-gate)) * up);
        }
      }
    }
    return;
  }
#pragma unroll
  for (int u = 0; u < TW; ++u) {
    if (tile0 + u >= args.n_tiles) break;
    // this thread's two weight rows of tile u (g and g + 8) take one bias load each, before the
    // stores (the compiler cannot move a load of the bias across a store to out: they may alias)
    float bias[2] = {0.0f, 0.0f};
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int64_t row = (tile0 + u) * kTileRows + g + 8 * h;
      if (args.bias != nullptr && row < args.n) bias[h] = load_bias<T>(args.bias, args.bias_type, row);
    }
    // fragment element (i, e): weight row `row_of(e)`, x row `col_of(i, e)`
    const auto row_of = [&](int e) { return (tile0 + u) * kTileRows + g + 8 * (e >> 1); };
    const auto col_of = [&](int i, int e) { return row_first + 8 * i + 2 * t + (e & 1); };
    // the residual values of the thread's outputs, all loaded before the first store for the same
    // reason (one memory round trip at the end of the kernel, not one per output)
    float residual[XB][4] = {};
    // out_sumsq: the squares of this thread's stored outputs of each x row (i, e), summed over the
    // tile's 16 rows below
    float squares[XB][2] = {};
    if (kFused && args.residual != nullptr) {
#pragma unroll
      for (int i = 0; i < XB; ++i) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          if (row_of(e) < args.n && col_of(i, e) < args.m) {
            residual[i][e] =
                static_cast<float>(static_cast<const T*>(args.residual)[col_of(i, e) * args.n + row_of(e)]);
          }
        }
      }
    }
#pragma unroll
    for (int i = 0; i < XB; ++i) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int64_t row = row_of(e), col = col_of(i, e);
        if (row >= args.n || col >= args.m) continue;
        float v = acc[u][i][e] * scale[i][e & 1];
        if (args.bias != nullptr) v += bias[e >> 1];
        if constexpr (kGelu) v = 0.5f * v * (1.0f + erff(v * 0.70710678118654752f));
        const T stored = static_cast<T>(v + residual[i][e]);
        static_cast<T*>(args.out)[col * args.n + row] = stored;
        if constexpr (kSumsq) {
          const float f = static_cast<float>(stored);
          squares[i][e & 1] = fmaf(f, f, squares[i][e & 1]);
        }
      }
    }
    if (kSumsq && args.out_sumsq != nullptr) {
      // lanes of one t hold the same x rows: add over g (lane bits 2..4), in a fixed order
#pragma unroll
      for (int i = 0; i < XB; ++i) {
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          float s = squares[i][e];
#pragma unroll
          for (int o = 4; o < 32; o <<= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
          const int64_t col = row_first + 8 * i + 2 * t + e;
          if (g == 0 && col < args.m) args.out_sumsq[col * args.n_tiles + tile0 + u] = s;
        }
      }
    }
  }
}

}  // namespace apt::fp4::cuda
