// Device-side decoding of FP4 codes and block scales (docs/contract.md §3), shared by the CUDA
// dequantize and linear kernels. Every value is computed exactly as the reference does
// (code value times decode scale, both float32), so the kernels can be bit-exact with it.
#pragma once
#include <c10/util/Float8_e4m3fn.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "fp4/fp4_format.h"

namespace apt::fp4::cuda {

// float value of one E2M1 code (0..15). The code's bits s|e1 e0|m placed as an fp16
// (sign bit 15, exponent bits 11..10, top mantissa bit 9) give exactly value * 2^-14, the
// subnormals included, so no table is needed.
__device__ __forceinline__ float e2m1_value(uint32_t code) {
  const uint16_t h = static_cast<uint16_t>(((code & 8u) << 12) | ((code & 7u) << 9));
  return __half2float(__ushort_as_half(h)) * 16384.0f;
}

// Two E2M1 codes (bits 0..3 and 4..7 of `byte`) as two fp16 values scaled by 2^-14, in one
// 32-bit word (low half = low nibble). Multiply by 2^14 after widening.
__device__ __forceinline__ uint32_t e2m1_pair_as_half2(uint32_t byte) {
  return ((byte & 0x8u) << 12) | ((byte & 0x7u) << 9) | ((byte & 0x80u) << 24) | ((byte & 0x70u) << 21);
}

// The float32 decode scale of block `i` of a row's scales (docs/contract.md §3 / reference.decode_scales).
//  nvfp4: float(e4m3) * tensor_scale; mxfp4: 2^(byte - 127); nf4: the float32 absmax.
template <Format F>
__device__ __forceinline__ float decode_scale(const void* scales, int64_t i, float tensor_scale) {
  if constexpr (F == Format::NVFP4) {
    const uint8_t b = static_cast<const uint8_t*>(scales)[i];
    return static_cast<float>(c10::Float8_e4m3fn(b, c10::Float8_e4m3fn::from_bits())) * tensor_scale;
  } else if constexpr (F == Format::MXFP4) {
    const int e = static_cast<int>(static_cast<const uint8_t*>(scales)[i]) - 127;
    return ldexpf(1.0f, e);
  } else {
    return static_cast<const float*>(scales)[i];
  }
}

// The float value of code `c` before scaling; `nf4_lut` is the 16-entry NF4 table in shared
// memory (16 distinct words in 16 banks: any access pattern of a warp is conflict-free).
template <Format F>
__device__ __forceinline__ float code_value(uint32_t c, const float* nf4_lut) {
  if constexpr (F == Format::NF4) {
    return nf4_lut[c];
  } else {
    return e2m1_value(c);
  }
}

// Fills a shared-memory NF4 table (call from every thread, then __syncthreads()).
__device__ __forceinline__ void load_nf4_lut(float* lut) {
  if (threadIdx.x < 16) {
    constexpr float kTable[16] = {kNF4[0], kNF4[1], kNF4[2],  kNF4[3],  kNF4[4],  kNF4[5],
                                  kNF4[6], kNF4[7], kNF4[8],  kNF4[9],  kNF4[10], kNF4[11],
                                  kNF4[12], kNF4[13], kNF4[14], kNF4[15]};
    float v = kTable[0];
#pragma unroll
    for (int i = 1; i < 16; ++i) v = threadIdx.x == i ? kTable[i] : v;
    lut[threadIdx.x] = v;
  }
}

}  // namespace apt::fp4::cuda
