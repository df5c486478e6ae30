// Dispatch constants of the CUDA fp4_linear (csrc/fp4/fp4_linear_cuda.cu). Change them here;
// benchmarks/fp4_linear.py measures both paths around the threshold.
#pragma once
#include <algorithm>
#include <cstdint>

namespace apt::fp4::cuda {

// x rows (M, all leading dims flattened) up to which bfloat16/float16 x takes the tensor-core
// GEMV kernel; above it the weight is dequantised and cuBLAS multiplies. Measured on an H200
// (benchmarks/results/fp4_linear_NVIDIA_H200.json, nvfp4, bf16 x, four shapes): at M = 16 the
// kernel is 1.5x-2.1x faster than dequantise + cuBLAS, at M = 32 the two tie (0.37x-0.62x bf16
// each), at M = 64 and 128 dequantise + cuBLAS is 1.8x-3.4x faster.
// The environment variable APT_FP4_SMALL_M_MAX, read once at the first call, overrides it
// (for measuring both paths without a rebuild).
constexpr int64_t kSmallMMaxRows = 16;

// The same for float32 x (nvfp4 and mxfp4 only; nf4 always dequantises): x is split into three
// bfloat16 terms, three mma per tile. APT_FP4_SMALL_M_MAX_F32 overrides it.
constexpr int64_t kSmallMMaxRowsF32 = 16;

// Largest dequantised scratch the large-M path allocates at once (it works in row chunks).
constexpr int64_t kScratchMaxBytes = int64_t{512} << 20;

// Multiprocessors of CUDA device `device`, queried once per device.
int sm_count(int device);

// Blocks of kCopyThreads threads for a grid-stride copy kernel over `items` on `device`: one item
// per thread, at most 8 blocks per multiprocessor (the packing kernels of x).
constexpr int kCopyThreads = 256;
inline int64_t copy_blocks(int64_t items, int device) {
  return std::min<int64_t>((items + kCopyThreads - 1) / kCopyThreads, int64_t{8} * sm_count(device));
}

// A non-negative integer from the environment variable `name`, or `fallback` when unset.
int64_t env_rows(const char* name, int64_t fallback);

}  // namespace apt::fp4::cuda
