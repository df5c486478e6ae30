// CUDA kernel of apt::fp4_linear: out = x @ dequantize(W).T + bias, fp32 accumulation.
//
// Two paths, chosen by the number of rows M of x (see fp4_linear_cuda.h for the threshold):
//  * small M, x bfloat16/float16: a tensor-core GEMV. Each warp owns 16 weight rows (8 warps,
//    128 rows per block) and all warps of a block walk the same K steps, so the rows of x they
//    read are shared through L1; K is split over the grid (float32 partials, then a reduce
//    kernel) when there are too few row blocks to fill the GPU. Per step a thread loads 16
//    bytes (32 codes) of each of its two rows, decodes them in registers to x's dtype and
//    feeds mma.sync m16n8k16 with the weights as the A operand and 8 rows of x as B, so every
//    decoded weight serves up to 8*MT rows of x. The K order inside a step is permuted
//    identically for A and B (a sum does not care), which makes each thread's 16 bytes one load.
//    float32 x (nvfp4, mxfp4) takes the same kernel with x split into three bfloat16 terms.
//  * otherwise: dequantise the weight to x's dtype into a scratch buffer (in row chunks) and
//    multiply with at::matmul (cuBLAS), bias added after.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <type_traits>

#include "fp4/fp4_codec_cuda.h"
#include "fp4/fp4_decode_cuda.h"
#include "fp4/fp4_format.h"
#include "fp4/fp4_linear_cuda.h"
#include "fp4/fp4_mma_cuda.h"

namespace apt::fp4::cuda {

// Multiprocessors of a device, queried once per device.
int sm_count(int device) {
  static std::array<std::atomic<int>, 256> cache{};
  // (messages built in nvcc-compiled code carry no integers: see csrc/fp4/fp4_checks.cpp)
  TORCH_CHECK(device >= 0 && device < static_cast<int>(cache.size()), "fp4_linear: CUDA device index out of range");
  int v = cache[device].load(std::memory_order_relaxed);
  if (v == 0) {
    C10_CUDA_CHECK(cudaDeviceGetAttribute(&v, cudaDevAttrMultiProcessorCount, device));
    cache[device].store(v, std::memory_order_relaxed);
  }
  return v;
}

// A non-negative integer from the environment variable `name`, or `fallback` when unset.
int64_t env_rows(const char* name, int64_t fallback) {
  const char* env = std::getenv(name);
  if (env == nullptr || *env == '\0') return fallback;
  char* end = nullptr;
  const long long v = std::strtoll(env, &end, 10);
  TORCH_CHECK_VALUE(end != env && *end == '\0' && v >= 0, name, ": expected a non-negative integer, got '", env, "'");
  return static_cast<int64_t>(v);
}

namespace {

constexpr int kWarps = 8;                      // warps per block, 16 weight rows each
constexpr int kRowsPerBlock = 16 * kWarps;     // weight rows per block
constexpr int kStepBytes = 64;                 // packed bytes of a row per step (4 threads x 16)
constexpr int kBlocksPerSm = 2;                // K is split until the grid has this many blocks per SM
constexpr int kMinStepsPerSplit = 4;           // ... but no split gets fewer steps than this

// 16 packed bytes of one row at byte offset `off` (a multiple of 8); bytes past the row (or a
// row past N) read as 0. `vec16`: rows are 16-byte aligned, so one 128-bit load suffices.
__device__ __forceinline__ uint4 load_chunk(const uint8_t* row, int64_t off, int64_t row_bytes, bool valid,
                                            bool vec16) {
  uint4 r = make_uint4(0, 0, 0, 0);
  if (!valid) return r;
  if (vec16 && off + 16 <= row_bytes) return __ldg(reinterpret_cast<const uint4*>(row + off));
  if (off + 8 <= row_bytes) {
    const uint2 lo = __ldg(reinterpret_cast<const uint2*>(row + off));
    r.x = lo.x;
    r.y = lo.y;
  }
  if (off + 16 <= row_bytes) {
    const uint2 hi = __ldg(reinterpret_cast<const uint2*>(row + off + 8));
    r.z = hi.x;
    r.w = hi.y;
  }
  return r;
}

// Weights decode exactly into x's dtype without float math when the block scale is exact in
// it: E2M1 codes times an E4M3 scale (nvfp4; the tensor scale is applied to the sum) have at
// most 6 significant bits, and mxfp4's 2^e fits bfloat16's exponent range. The other cases
// (nf4, mxfp4 with float16 x) multiply in float32 and round once.
template <Format F, typename T>
constexpr bool kExactDecode = F == Format::NVFP4 || (F == Format::MXFP4 && !std::is_same_v<T, at::Half>);

// The stored scales of the two 16-code halves of the chunk that starts at code k0 of `row`,
// raw, so they can be loaded one step ahead: nvfp4 two E4M3 bytes (half 0 in the low byte),
// mxfp4 the exponent byte, nf4 the float's bits. A half past the row reads block nb-1 (its
// codes are zero and so is x there). 0 for an invalid row.
template <Format F>
__device__ __forceinline__ uint32_t load_raw_scales(const void* scales, int64_t row, int64_t nb, int64_t k0,
                                                    bool valid) {
  if (!valid) return 0u;
  const int64_t b0 = min(k0 / block_size_of(F), nb - 1);
  if constexpr (F == Format::NVFP4) {
    const uint8_t* s = static_cast<const uint8_t*>(scales) + row * nb;
    return __ldg(s + b0) | (static_cast<uint32_t>(__ldg(s + min(b0 + 1, nb - 1))) << 8);
  } else if constexpr (F == Format::MXFP4) {
    return __ldg(static_cast<const uint8_t*>(scales) + row * nb + b0);
  } else {
    return __float_as_uint(__ldg(static_cast<const float*>(scales) + row * nb + b0));
  }
}

// The two halves' scales as the decode needs them: t2 a packed pair of T for the exact decode
// (without nvfp4's tensor scale), f the float32 decode scale otherwise.
template <Format F, typename T>
__device__ __forceinline__ void scales_from_raw(uint32_t raw, uint32_t (&t2)[2], float (&f)[2]) {
#pragma unroll
  for (int hf = 0; hf < 2; ++hf) {
    float v;
    if constexpr (F == Format::NVFP4) {
      v = static_cast<float>(
          c10::Float8_e4m3fn(static_cast<uint8_t>((raw >> (8 * hf)) & 0xFFu), c10::Float8_e4m3fn::from_bits()));
    } else if constexpr (F == Format::MXFP4) {
      v = ldexpf(1.0f, static_cast<int>(raw) - 127);
    } else {
      v = __uint_as_float(raw);
    }
    f[hf] = v;
    t2[hf] = kExactDecode<F, T> ? MmaType<T>::pack(v, v) : 0u;
  }
}

// Decodes the 4 codes of a 16-bit chunk (k, k+1, k+2, k+3) into two packed pairs of T:
// lo = (k, k+1), hi = (k+2, k+3). Exact decode: magnitudes by two byte-permute lookups,
// sign bits moved into place by one multiply each, then one paired multiply by the scale.
template <Format F, typename T>
__device__ __forceinline__ void decode4(uint32_t h, uint32_t scale_t2, float scale, const float* lut, uint32_t& lo,
                                        uint32_t& hi) {
  if constexpr (kExactDecode<F, T>) {
    const uint32_t mag = h & 0x7777u;
    const uint32_t lob = __byte_perm(MmaType<T>::kLo0, MmaType<T>::kLo1, mag);
    const uint32_t hib = __byte_perm(MmaType<T>::kHi0, MmaType<T>::kHi1, mag);
    const uint32_t sg = h & 0x8888u;  // sign bits of codes 0..3 at bits 3, 7, 11, 15
    lo = __byte_perm(lob, hib, 0x5140) | ((sg * 0x01001000u) & 0x80008000u);
    hi = __byte_perm(lob, hib, 0x7362) | ((sg * 0x00010010u) & 0x80008000u);
    lo = MmaType<T>::mul2(lo, scale_t2);
    hi = MmaType<T>::mul2(hi, scale_t2);
  } else if constexpr (F == Format::NF4) {
    lo = MmaType<T>::pack(lut[h & 0xF] * scale, lut[(h >> 4) & 0xF] * scale);
    hi = MmaType<T>::pack(lut[(h >> 8) & 0xF] * scale, lut[(h >> 12) & 0xF] * scale);
  } else {
    // E2M1 pairs as fp16 * 2^-14 (exact), widened to float and scaled by scale * 2^14.
    const float s = scale * 16384.0f;
    const uint32_t p0 = e2m1_pair_as_half2(h & 0xFF), p1 = e2m1_pair_as_half2((h >> 8) & 0xFF);
    const float2 f0 = __half22float2(*reinterpret_cast<const __half2*>(&p0));
    const float2 f1 = __half22float2(*reinterpret_cast<const __half2*>(&p1));
    lo = MmaType<T>::pack(f0.x * s, f0.y * s);
    hi = MmaType<T>::pack(f1.x * s, f1.y * s);
  }
}

__device__ __forceinline__ float gelu_erf(float v) { return 0.5f * v * (1.0f + erff(v * 0.70710678118654752f)); }

// The epilogue of one output element: nvfp4's tensor scale (the exact decode left it out),
// bias, GELU.
template <Format F, bool kGelu>
__device__ __forceinline__ float finish(float v, float ts, const float* bias, int64_t row) {
  if constexpr (F == Format::NVFP4) v *= ts;
  if (bias != nullptr) v += bias[row];
  if constexpr (kGelu) v = gelu_erf(v);
  return v;
}

// x [M, K] (contiguous), packed [N, row_bytes], scales [N, 2*row_bytes/bs].
// Grid: (ceil(M / (8*MT)), ceil(N / kRowsPerBlock), splits); block: kWarps*32 threads.
// Warp w of a block owns weight rows n0 + 16w .. n0 + 16w + 15; all warps walk the same K
// steps [z * steps_per_split, ...) together, so the rows of x they read are shared through L1.
// splits == 1: out is [M, N] of T with the epilogue applied. splits > 1: out is float32
// partial sums [splits, M, N] that reduce_splits_kernel finishes.
template <Format F, typename T, int MT, bool kGelu>
__global__ void __launch_bounds__(kWarps * 32, MT >= 4 ? 1 : 2)
    small_m_kernel(const T* __restrict__ x, int64_t m, int64_t k, const uint8_t* __restrict__ packed,
                   int64_t row_bytes, const void* __restrict__ scales, const float* __restrict__ tensor_scale,
                   const float* __restrict__ bias, void* __restrict__ out, int64_t n, int64_t steps_per_split) {
  constexpr int kCols = 8 * MT;  // rows of x per block
  __shared__ float lut[16];
  if constexpr (F == Format::NF4) {
    load_nf4_lut(lut);
    __syncthreads();
  }

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane >> 2, t = lane & 3;
  const int64_t m0 = static_cast<int64_t>(blockIdx.x) * kCols;
  const int64_t ra = static_cast<int64_t>(blockIdx.y) * kRowsPerBlock + 16 * warp + g, rb = ra + 8;
  const bool va = ra < n, vb = rb < n;
  const uint8_t* row_a = packed + (va ? ra : 0) * row_bytes;
  const uint8_t* row_b = packed + (vb ? rb : 0) * row_bytes;
  const int64_t nb = 2 * row_bytes / block_size_of(F);  // scale blocks per row
  const bool wvec16 = (row_bytes % 16) == 0;
  constexpr bool kF32 = std::is_same_v<T, float>;
  static_assert(!kF32 || kExactDecode<F, T>, "float32 x needs weights that are exact in bfloat16");
  const bool xvec16 = (k % (kF32 ? 4 : 8)) == 0;  // every row of x starts 16-byte aligned

  float acc[MT][4];
#pragma unroll
  for (int i = 0; i < MT; ++i) acc[i][0] = acc[i][1] = acc[i][2] = acc[i][3] = 0.0f;

  const int64_t steps = (row_bytes + kStepBytes - 1) / kStepBytes;
  const int64_t step_begin = static_cast<int64_t>(blockIdx.z) * steps_per_split;
  const int64_t step_end = min(steps, step_begin + steps_per_split);
  // Loads of the next step (weights and their scales) are issued before this step's math.
  int64_t off = step_begin * kStepBytes + 16 * t;  // this thread's byte offset in the row
  const bool any = step_begin < step_end;
  uint4 wa = load_chunk(row_a, off, row_bytes, va && any, wvec16);
  uint4 wb = load_chunk(row_b, off, row_bytes, vb && any, wvec16);
  uint32_t raw_a = load_raw_scales<F>(scales, ra, nb, 2 * off, va && any);
  uint32_t raw_b = load_raw_scales<F>(scales, rb, nb, 2 * off, vb && any);
  for (int64_t step = step_begin; step < step_end; ++step, off += kStepBytes) {
    const int64_t nxt = off + kStepBytes;
    const bool more = step + 1 < step_end;
    const uint4 na = load_chunk(row_a, nxt, row_bytes, va && more, wvec16);
    const uint4 nbv = load_chunk(row_b, nxt, row_bytes, vb && more, wvec16);
    const uint32_t nraw_a = load_raw_scales<F>(scales, ra, nb, 2 * nxt, va && more);
    const uint32_t nraw_b = load_raw_scales<F>(scales, rb, nb, 2 * nxt, vb && more);
    const int64_t k0 = 2 * off;  // first k of this thread's 32 codes
    // This thread's 32 x values of each of its MT rows as 16-byte loads (8 halves or 4 floats).
    constexpr int kLoads = kF32 ? 8 : 4, kPerLoad = 32 / kLoads;
    uint4 xv[MT][kLoads];
#pragma unroll
    for (int i = 0; i < MT; ++i)
#pragma unroll
      for (int q = 0; q < kLoads; ++q) xv[i][q] = load_x16<T>(x, m0 + 8 * i + g, m, k, k0 + kPerLoad * q, xvec16);
    float sa[2], sb[2];
    uint32_t sa2[2], sb2[2];
    scales_from_raw<F, T>(raw_a, sa2, sa);
    scales_from_raw<F, T>(raw_b, sb2, sb);
#pragma unroll
    for (int s = 0; s < 8; ++s) {
      // Step s: bytes 2s, 2s+1 of the chunk = codes k0+4s .. k0+4s+3.
      const uint32_t ha = (word_of(wa, s >> 1) >> (16 * (s & 1))) & 0xFFFF;
      const uint32_t hb = (word_of(wb, s >> 1) >> (16 * (s & 1))) & 0xFFFF;
      uint32_t a[4];
      decode4<F, T>(ha, sa2[s >> 2], sa[s >> 2], lut, a[0], a[2]);
      decode4<F, T>(hb, sb2[s >> 2], sb[s >> 2], lut, a[1], a[3]);
#pragma unroll
      for (int i = 0; i < MT; ++i) {
        if constexpr (kF32) {
          // x[k0+4s .. k0+4s+3] = the 4 floats of load s.
          uint32_t b0[3], b1[3];
          split_bf16<3>(__uint_as_float(xv[i][s].x), __uint_as_float(xv[i][s].y), b0);
          split_bf16<3>(__uint_as_float(xv[i][s].z), __uint_as_float(xv[i][s].w), b1);
#pragma unroll
          for (int p = 0; p < 3; ++p) MmaType<T>::mma(acc[i], a, b0[p], b1[p]);
        } else {
          const uint32_t b0 = word_of(xv[i][s >> 1], 2 * (s & 1));
          const uint32_t b1 = word_of(xv[i][s >> 1], 2 * (s & 1) + 1);
          MmaType<T>::mma(acc[i], a, b0, b1);
        }
      }
    }
    wa = na;
    wb = nbv;
    raw_a = nraw_a;
    raw_b = nraw_b;
  }

  // C fragment: acc[i][0..1] = (row g, x rows 2t, 2t+1 of tile i), acc[i][2..3] = (row g+8, same).
  const float ts = F == Format::NVFP4 ? __ldg(tensor_scale) : 1.0f;
#pragma unroll
  for (int i = 0; i < MT; ++i) {
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int64_t row = j < 2 ? ra : rb;
      const int64_t col = m0 + 8 * i + 2 * t + (j & 1);
      if (row >= n || col >= m) continue;
      if (gridDim.z == 1) {
        static_cast<T*>(out)[col * n + row] = static_cast<T>(finish<F, kGelu>(acc[i][j], ts, bias, row));
      } else {
        static_cast<float*>(out)[(static_cast<int64_t>(blockIdx.z) * m + col) * n + row] = acc[i][j];
      }
    }
  }
}

// out[c, r] = epilogue(sum over splits of part[z, c, r]) for the M x N outputs.
template <Format F, typename T, bool kGelu>
__global__ void reduce_splits_kernel(const float* __restrict__ part, int64_t splits, int64_t m, int64_t n,
                                     const float* __restrict__ tensor_scale, const float* __restrict__ bias,
                                     T* __restrict__ out) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= m * n) return;
  float v = 0.0f;
  for (int64_t z = 0; z < splits; ++z) v += part[z * m * n + idx];
  const float ts = F == Format::NVFP4 ? __ldg(tensor_scale) : 1.0f;
  out[idx] = static_cast<T>(finish<F, kGelu>(v, ts, bias, idx % n));
}

int64_t small_m_max_rows() {
  static const int64_t value = env_rows("APT_FP4_SMALL_M_MAX", kSmallMMaxRows);
  return value;
}

int64_t small_m_max_rows_f32() {
  static const int64_t value = env_rows("APT_FP4_SMALL_M_MAX_F32", kSmallMMaxRowsF32);
  return value;
}

template <Format F, typename T, bool kGelu>
void launch_small_m(const at::Tensor& x2, const at::Tensor& packed, const at::Tensor& scales,
                    const at::Tensor& tensor_scale, const float* bias, at::Tensor& out) {
  const int64_t m = x2.size(0), k = x2.size(1), n = packed.size(0), row_bytes = packed.size(1);
  auto stream = c10::cuda::getCurrentCUDAStream();
  const int64_t n_blocks = (n + kRowsPerBlock - 1) / kRowsPerBlock;
  TORCH_CHECK(n_blocks <= 65535, "fp4_linear: N exceeds the small-M kernel's grid limit (65535 blocks of 128 rows)");
  // Split K over the grid until there are about kBlocksPerSm blocks per multiprocessor, each
  // split keeping at least kMinStepsPerSplit steps (64 packed bytes of a row per step).
  const int64_t steps = (row_bytes + kStepBytes - 1) / kStepBytes;
  const int sms = sm_count(x2.get_device());
  auto go = [&](auto mt_c) {
    constexpr int MT = decltype(mt_c)::value;
    const int64_t m_blocks = (m + 8 * MT - 1) / (8 * MT);
    const int64_t want = (kBlocksPerSm * sms + n_blocks * m_blocks - 1) / (n_blocks * m_blocks);
    const int64_t max_splits = std::max<int64_t>(1, steps / kMinStepsPerSplit);
    int64_t splits = std::clamp<int64_t>(want, 1, std::min<int64_t>(max_splits, 65535));
    const int64_t per_split = (steps + splits - 1) / splits;
    splits = (steps + per_split - 1) / per_split;
    const dim3 grid(static_cast<unsigned>(m_blocks), static_cast<unsigned>(n_blocks), static_cast<unsigned>(splits));
    at::Tensor part;
    void* dst = out.mutable_data_ptr();
    if (splits > 1) {
      part = at::empty({splits, m, n}, x2.options().dtype(at::kFloat));
      dst = part.mutable_data_ptr();
    }
    small_m_kernel<F, T, MT, kGelu><<<grid, kWarps * 32, 0, stream>>>(
        x2.const_data_ptr<T>(), m, k, packed.const_data_ptr<uint8_t>(), row_bytes, scales.const_data_ptr(),
        tensor_scale.const_data_ptr<float>(), bias, dst, n, per_split);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    if (splits > 1) {
      const int64_t total = m * n;
      reduce_splits_kernel<F, T, kGelu><<<(total + 255) / 256, 256, 0, stream>>>(
          part.const_data_ptr<float>(), splits, m, n, tensor_scale.const_data_ptr<float>(), bias,
          out.mutable_data_ptr<T>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
  };
  if constexpr (std::is_same_v<T, float>) {  // float32 x: three mma per tile already
    go(std::integral_constant<int, 1>{});
  } else if (m <= 8) {
    go(std::integral_constant<int, 1>{});
  } else if (m <= 16) {
    go(std::integral_constant<int, 2>{});
  } else {
    go(std::integral_constant<int, 4>{});
  }
}

at::Tensor fp4_linear_cuda_impl(const at::Tensor& x, const at::Tensor& packed_in, const at::Tensor& scales_in,
                                const at::Tensor& tensor_scale, const c10::optional<at::Tensor>& bias,
                                const std::string& fmt, int64_t block_size, bool gelu) {
  const Format f = parse_format(fmt);
  check_block_size(f, fmt, block_size);
  const int64_t kp = check_packed_weight(packed_in, scales_in, tensor_scale, f, block_size);
  check_linear_args(x, packed_in, bias, kp, block_size);
  const c10::cuda::CUDAGuard guard(x.device());
  const int64_t k = x.size(-1), n = packed_in.size(0);
  const at::Tensor x2 = x.reshape({-1, k}).contiguous();
  const int64_t m = x2.size(0);
  auto out_sizes = x.sizes().vec();
  out_sizes.back() = n;
  at::Tensor out = at::empty({m, n}, x.options());
  if (m == 0 || n == 0) return out.view(out_sizes);
  // The kernels read 16-byte vectors: make the packed weight contiguous and 16-byte aligned.
  at::Tensor packed = packed_in.contiguous();
  if (reinterpret_cast<uintptr_t>(packed.const_data_ptr()) % 16 != 0) packed = packed.clone();
  const at::Tensor xa = reinterpret_cast<uintptr_t>(x2.const_data_ptr()) % 16 != 0 ? x2.clone() : x2;
  const at::Tensor scales = scales_in.contiguous();

  const bool small = x.scalar_type() == at::kFloat ? (f != Format::NF4 && m <= small_m_max_rows_f32())
                                                  : m <= small_m_max_rows();
  if (small) {
    const at::Tensor bias_f = bias.has_value() ? bias->to(at::kFloat).contiguous() : at::Tensor();
    const float* bias_ptr = bias.has_value() ? bias_f.const_data_ptr<float>() : nullptr;
    dispatch_format(f, [&](auto fc) {
      constexpr Format F = decltype(fc)::value;
      if (x.scalar_type() == at::kFloat) {
        if constexpr (F != Format::NF4) {
          gelu ? launch_small_m<F, float, true>(xa, packed, scales, tensor_scale, bias_ptr, out)
               : launch_small_m<F, float, false>(xa, packed, scales, tensor_scale, bias_ptr, out);
        }
      } else if (x.scalar_type() == at::kBFloat16) {
        gelu ? launch_small_m<F, at::BFloat16, true>(xa, packed, scales, tensor_scale, bias_ptr, out)
             : launch_small_m<F, at::BFloat16, false>(xa, packed, scales, tensor_scale, bias_ptr, out);
      } else {
        gelu ? launch_small_m<F, at::Half, true>(xa, packed, scales, tensor_scale, bias_ptr, out)
             : launch_small_m<F, at::Half, false>(xa, packed, scales, tensor_scale, bias_ptr, out);
      }
    });
    return out.view(out_sizes);
  }

  // Large M (or float32 x): dequantise rows in chunks of at most kScratchMaxBytes, then cuBLAS.
  const int64_t elem = x2.element_size();
  const int64_t chunk = std::max<int64_t>(1, std::min<int64_t>(n, kScratchMaxBytes / (k * elem)));
  // The bias goes into the matmul (cuBLASLt's bias epilogue: one launch and one rounding fewer).
  at::Tensor w = at::empty({chunk, k}, x.options());
  const at::Tensor bias_x = bias.has_value() ? bias->to(x.scalar_type()) : at::Tensor();
  for (int64_t r0 = 0; r0 < n; r0 += chunk) {
    const int64_t rows = std::min(chunk, n - r0);
    at::Tensor wc = w.narrow(0, 0, rows);
    launch_dequantize(packed, scales, tensor_scale, f, r0, rows, k, wc);
    at::Tensor dst = rows == n ? out : at::empty({m, rows}, x.options());
    if (bias.has_value()) {
      at::addmm_out(dst, bias_x.narrow(0, r0, rows), x2, wc.t());
    } else {
      at::mm_out(dst, x2, wc.t());
    }
    if (rows != n) out.narrow(1, r0, rows).copy_(dst);
  }
  if (gelu) out = at::gelu(out);
  return out.view(out_sizes);
}

at::Tensor fp4_linear_cuda(const at::Tensor& x, const at::Tensor& packed, const at::Tensor& scales,
                           const at::Tensor& tensor_scale, const c10::optional<at::Tensor>& bias,
                           const std::string& fmt, int64_t block_size) {
  return fp4_linear_cuda_impl(x, packed, scales, tensor_scale, bias, fmt, block_size, false);
}

at::Tensor fp4_linear_gelu_cuda(const at::Tensor& x, const at::Tensor& packed, const at::Tensor& scales,
                                const at::Tensor& tensor_scale, const c10::optional<at::Tensor>& bias,
                                const std::string& fmt, int64_t block_size) {
  return fp4_linear_cuda_impl(x, packed, scales, tensor_scale, bias, fmt, block_size, true);
}
}  // namespace

TORCH_LIBRARY_IMPL(apt, CUDA, m) {
  m.impl("fp4_linear", &fp4_linear_cuda);
  m.impl("fp4_linear_gelu", &fp4_linear_gelu_cuda);
}

}  // namespace apt::fp4::cuda
