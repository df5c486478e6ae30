// CUDA kernels of apt::fp4_pack, fp4_unpack, fp4_quantize and fp4_dequantize (docs/contract.md §3).
// fp4_quantize is bit-exact with apt_ext/reference/fp4.py: the same float32 operations in the
// same order, E4M3 by c10::Float8_e4m3fn (round to nearest even) after clamping at 448, mxfp4
// exponents by frexpf, nf4 codes by the first nearest table entry.
#include <c10/cuda/CUDAStream.h>
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/util/Float8_e4m3fn.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <torch/library.h>

#include "fp4/fp4_codec_cuda.h"
#include "fp4/fp4_decode_cuda.h"
#include "fp4/fp4_format.h"
#include "fp4/fp4_pack.h"

namespace apt::fp4::cuda {
namespace {

constexpr int kThreads = 256;

int64_t blocks_for(int64_t n) { return (n + kThreads - 1) / kThreads; }

// ---- pack / unpack ---------------------------------------------------------------------
__global__ void pack_kernel(const uint8_t* __restrict__ codes, uint8_t* __restrict__ out, int64_t n,
                            int* __restrict__ bad) {
  const int64_t j = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (j >= n) return;
  const uint8_t lo = codes[2 * j], hi = codes[2 * j + 1];
  if ((lo | hi) > 15) *bad = 1;
  out[j] = static_cast<uint8_t>((lo & 0xF) | (hi << 4));
}

__global__ void unpack_kernel(const uint8_t* __restrict__ packed, uint8_t* __restrict__ out, int64_t n) {
  const int64_t j = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (j >= n) return;
  const uint8_t b = packed[j];
  out[2 * j] = b & 0xF;
  out[2 * j + 1] = b >> 4;
}

// ---- quantize ----------------------------------------------------------------------------
// E2M1 code of a float32 (reference.e2m1_codes): nearest, ties to mantissa bit 0, saturating.
__device__ __forceinline__ uint32_t e2m1_code(float v) {
  const float m = fabsf(v);
  const uint32_t code = (m > 0.25f) + (m >= 0.75f) + (m > 1.25f) + (m >= 1.75f) + (m > 2.5f) +
                        (m >= 3.5f) + (m > 5.0f);
  return code + ((v < 0.0f && code > 0) ? 8u : 0u);
}

// Index of the first nearest NF4 value to q (ties go to the lower index).
__device__ __forceinline__ uint32_t nf4_code(float q, const float* lut) {
  uint32_t best = 0;
  float best_d = fabsf(q - lut[0]);
#pragma unroll
  for (uint32_t i = 1; i < 16; ++i) {
    const float d = fabsf(q - lut[i]);
    if (d < best_d) {
      best_d = d;
      best = i;
    }
  }
  return best;
}

// One thread per block of `bs` weights of a row: w [N, K] (row stride K), packed [N, Kp/2],
// scales [N, Kp/bs]. Elements at k >= K are the zero padding.
template <Format F, typename T>
__global__ void quantize_kernel(const T* __restrict__ w, int64_t n_rows, int64_t k, int64_t nb,
                                const float* __restrict__ tensor_scale, uint8_t* __restrict__ packed,
                                void* __restrict__ scales) {
  constexpr int bs = static_cast<int>(block_size_of(F));
  __shared__ float lut[16];
  if constexpr (F == Format::NF4) {
    load_nf4_lut(lut);
    __syncthreads();
  }
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= n_rows * nb) return;
  const int64_t row = idx / nb, blk = idx % nb;
  const int64_t k0 = blk * bs;
  const T* src = w + row * k;
  float v[bs];
  float bamax = 0.0f;
#pragma unroll
  for (int i = 0; i < bs; ++i) {
    v[i] = (k0 + i < k) ? static_cast<float>(src[k0 + i]) : 0.0f;
    bamax = fmaxf(bamax, fabsf(v[i]));
  }
  uint8_t* dst = packed + row * (nb * bs / 2) + k0 / 2;
  uint32_t codes[bs];
  if constexpr (F == Format::NVFP4) {
    const float ts = *tensor_scale;
    const float s = fminf((bamax / 6.0f) / ts, 448.0f);
    const c10::Float8_e4m3fn s8(s);
    static_cast<uint8_t*>(scales)[idx] = s8.x;
    const float dec = static_cast<float>(s8) * ts;
#pragma unroll
    for (int i = 0; i < bs; ++i) codes[i] = dec == 0.0f ? 0u : e2m1_code(v[i] / dec);
  } else if constexpr (F == Format::MXFP4) {
    int ex = 0;
    const float mant = frexpf(bamax / 6.0f, &ex);
    int e = mant == 0.5f ? ex - 1 : ex;
    if (bamax == 0.0f) e = -127;
    e = min(max(e, -127), 127);
    static_cast<uint8_t*>(scales)[idx] = static_cast<uint8_t>(e + 127);
    const float dec = ldexpf(1.0f, e);
#pragma unroll
    for (int i = 0; i < bs; ++i) codes[i] = e2m1_code(v[i] / dec);
  } else {
    static_cast<float*>(scales)[idx] = bamax;
#pragma unroll
    for (int i = 0; i < bs; ++i) codes[i] = bamax == 0.0f ? 7u : nf4_code(v[i] / bamax, lut);
  }
#pragma unroll
  for (int i = 0; i < bs; i += 2) dst[i / 2] = static_cast<uint8_t>(codes[i] | (codes[i + 1] << 4));
}

// ---- dequantize --------------------------------------------------------------------------
// out[r, c] for c < ncols (<= Kp) of rows [row0, row0 + rows): code value times decode scale
// in float32, rounded once to T. One thread per 4 packed bytes (8 outputs, one scale block:
// rows hold a multiple of 8 bytes and blocks of at least 8), stored as one 16/32-byte vector
// when `vec` (the 8 outputs are in range and aligned), else element by element.
template <typename T, int N>
struct alignas(sizeof(T) * N) Vec {
  T v[N];
};

template <Format F, typename T>
__global__ void dequantize_kernel(const uint8_t* __restrict__ packed, const void* __restrict__ scales,
                                  const float* __restrict__ tensor_scale, int64_t row0, int64_t rows,
                                  int64_t row_bytes, int64_t ncols, T* __restrict__ out, int64_t ld_out,
                                  bool vec) {
  constexpr int64_t bs = block_size_of(F);
  __shared__ float lut[16];
  if constexpr (F == Format::NF4) {
    load_nf4_lut(lut);
    __syncthreads();
  }
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t words = (ncols + 7) / 8;  // 4-byte groups per row that reach the output
  if (idx >= rows * words) return;
  const int64_t r = idx / words, j = 4 * (idx % words);  // first packed byte of this thread
  const int64_t row = row0 + r;
  const uint32_t b = *reinterpret_cast<const uint32_t*>(packed + row * row_bytes + j);
  const float ts = F == Format::NVFP4 ? *tensor_scale : 1.0f;
  const float s = decode_scale<F>(scales, row * (2 * row_bytes / bs) + (2 * j) / bs, ts);
  Vec<T, 8> o;
#pragma unroll
  for (int i = 0; i < 8; ++i) o.v[i] = static_cast<T>(code_value<F>((b >> (4 * i)) & 0xFu, lut) * s);
  T* dst = out + r * ld_out + 2 * j;
  if (vec && 2 * j + 8 <= ncols) {
    *reinterpret_cast<Vec<T, 8>*>(dst) = o;
  } else {
#pragma unroll
    for (int i = 0; i < 8; ++i)
      if (2 * j + i < ncols) dst[i] = o.v[i];
  }
}

}  // namespace

void launch_dequantize(const at::Tensor& packed, const at::Tensor& scales, const at::Tensor& tensor_scale,
                       Format f, int64_t row0, int64_t rows, int64_t ncols, at::Tensor& out) {
  const int64_t total = rows * ((ncols + 7) / 8);
  if (total == 0) return;
  TORCH_CHECK(packed.size(1) % 4 == 0 && reinterpret_cast<uintptr_t>(packed.const_data_ptr()) % 4 == 0,
              "fp4 dequantize: packed rows must be 4-byte aligned");
  // Vector stores need every row's start 8-element aligned.
  const bool vec = out.stride(0) % 8 == 0 && reinterpret_cast<uintptr_t>(out.const_data_ptr()) % (8 * out.element_size()) == 0;
  auto stream = c10::cuda::getCurrentCUDAStream();
  dispatch_format(f, [&](auto fc) {
    constexpr Format F = decltype(fc)::value;
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, out.scalar_type(), "fp4_dequantize_cuda", [&] {
      dequantize_kernel<F, scalar_t><<<blocks_for(total), kThreads, 0, stream>>>(
          packed.const_data_ptr<uint8_t>(), scales.const_data_ptr(), tensor_scale.const_data_ptr<float>(),
          row0, rows, packed.size(1), ncols, out.mutable_data_ptr<scalar_t>(), out.stride(0), vec);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
}

at::Tensor fp4_pack_cuda(const at::Tensor& codes) {
  check_pack_input(codes);
  const c10::cuda::CUDAGuard guard(codes.device());
  auto c = codes.contiguous();
  auto sizes = c.sizes().vec();
  sizes.back() /= 2;
  at::Tensor out = at::empty(sizes, c.options());
  const int64_t n = out.numel();
  if (n == 0) return out;
  at::Tensor bad = at::zeros({1}, c.options().dtype(at::kInt));
  pack_kernel<<<blocks_for(n), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
      c.const_data_ptr<uint8_t>(), out.mutable_data_ptr<uint8_t>(), n, bad.mutable_data_ptr<int>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  if (bad.item<int>() != 0) {
    const int64_t first = c.reshape(-1).gt(15).nonzero()[0][0].item<int64_t>();
    throw_bad_code(first, static_cast<int>(c.reshape(-1)[first].item<uint8_t>()));
  }
  return out;
}

at::Tensor fp4_unpack_cuda(const at::Tensor& packed) {
  check_unpack_input(packed);
  const c10::cuda::CUDAGuard guard(packed.device());
  auto p = packed.contiguous();
  auto sizes = p.sizes().vec();
  sizes.back() *= 2;
  at::Tensor out = at::empty(sizes, p.options());
  const int64_t n = p.numel();
  if (n == 0) return out;
  unpack_kernel<<<blocks_for(n), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
      p.const_data_ptr<uint8_t>(), out.mutable_data_ptr<uint8_t>(), n);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> fp4_quantize_cuda(const at::Tensor& w, const std::string& fmt,
                                                               int64_t block_size) {
  const Format f = check_quantize_args(w, fmt, block_size);
  const c10::cuda::CUDAGuard guard(w.device());
  auto wc = w.contiguous();
  TORCH_CHECK_VALUE(wc.isfinite().all().item<bool>(), kNonFiniteWeightMessage);
  const int64_t n = wc.size(0), k = wc.size(1);
  const int64_t nb = (k + block_size - 1) / block_size;
  at::Tensor packed = at::empty({n, nb * block_size / 2}, wc.options().dtype(at::kByte));
  at::Tensor scales = at::empty({n, nb}, wc.options().dtype(scale_dtype(f)));
  at::Tensor ts;
  if (f == Format::NVFP4) {
    // reference: amax / (448 * 6) in float32, 1.0 when amax is 0. The divisor is a device
    // tensor: dividing by a host scalar multiplies by its rounded reciprocal on CUDA.
    const at::Tensor amax = wc.abs().amax().to(at::kFloat);
    ts = at::where(amax > 0, amax.div(at::full({}, 2688.0f, amax.options())), at::ones_like(amax));
  } else {
    ts = at::ones({}, wc.options().dtype(at::kFloat));
  }
  auto stream = c10::cuda::getCurrentCUDAStream();
  dispatch_format(f, [&](auto fc) {
    constexpr Format F = decltype(fc)::value;
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, wc.scalar_type(), "fp4_quantize_cuda", [&] {
      quantize_kernel<F, scalar_t><<<blocks_for(n * nb), kThreads, 0, stream>>>(
          wc.const_data_ptr<scalar_t>(), n, k, nb, ts.const_data_ptr<float>(),
          packed.mutable_data_ptr<uint8_t>(), scales.mutable_data_ptr());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
  return {packed, scales, ts};
}

at::Tensor fp4_dequantize_cuda(const at::Tensor& packed, const at::Tensor& scales,
                               const at::Tensor& tensor_scale, const std::string& fmt, int64_t block_size,
                               c10::ScalarType dtype) {
  const PackedWeightArgs args = check_dequantize_args(packed, scales, tensor_scale, fmt, block_size, dtype);
  const Format f = args.format;
  const int64_t kp = args.k_padded;
  const c10::cuda::CUDAGuard guard(packed.device());
  at::Tensor out = at::empty({packed.size(0), kp}, packed.options().dtype(dtype));
  at::Tensor p = packed.contiguous();
  if (reinterpret_cast<uintptr_t>(p.const_data_ptr()) % 4 != 0) p = p.clone();  // the kernel reads 4-byte words
  launch_dequantize(p, scales.contiguous(), tensor_scale, f, 0, p.size(0), kp, out);
  return out;
}

TORCH_LIBRARY_IMPL(apt, CUDA, m) {
  m.impl("fp4_pack", &fp4_pack_cuda);
  m.impl("fp4_unpack", &fp4_unpack_cuda);
  m.impl("fp4_quantize", &fp4_quantize_cuda);
  m.impl("fp4_dequantize", &fp4_dequantize_cuda);
}

}  // namespace apt::fp4::cuda
