// Device helpers shared by the FP4 linear kernels (fp4_linear_cuda.cu, fp4_gemv_kernel_cuda.h, the
// tiled GEMM): mma.sync m16n8k16 with float32 accumulation per x dtype, 16-byte loads of x, the
// split of float32 x into bfloat16 terms, and programmatic dependent launch.
#pragma once
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <cstring>
#include <type_traits>

namespace apt::fp4::cuda {

template <typename T>
struct MmaType;
template <>
struct MmaType<at::BFloat16> {
  // E2M1 magnitudes 0, 0.5, 1, 1.5, 2, 3, 4, 6 as bfloat16 bits, split into low and high
  // bytes (bytes 0..7 of each table = codes 0..7), for __byte_perm lookups.
  static constexpr uint32_t kLo0 = 0xC0800000u, kLo1 = 0xC0804000u, kHi0 = 0x3F3F3F00u, kHi1 = 0x40404040u;
  __device__ static uint32_t pack(float a, float b) {
    const __nv_bfloat162 v = __floats2bfloat162_rn(a, b);
    return *reinterpret_cast<const uint32_t*>(&v);
  }
  __device__ static uint32_t mul2(uint32_t a, uint32_t b) {
    const __nv_bfloat162 r =
        __hmul2(*reinterpret_cast<const __nv_bfloat162*>(&a), *reinterpret_cast<const __nv_bfloat162*>(&b));
    return *reinterpret_cast<const uint32_t*>(&r);
  }
  __device__ static void mma(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
};
template <>
struct MmaType<at::Half> {
  // The same magnitudes as float16 bits (their low bytes are all zero).
  static constexpr uint32_t kLo0 = 0u, kLo1 = 0u, kHi0 = 0x3E3C3800u, kHi1 = 0x46444240u;
  __device__ static uint32_t pack(float a, float b) {
    const __half2 v = __floats2half2_rn(a, b);
    return *reinterpret_cast<const uint32_t*>(&v);
  }
  __device__ static uint32_t mul2(uint32_t a, uint32_t b) {
    const __half2 r = __hmul2(*reinterpret_cast<const __half2*>(&a), *reinterpret_cast<const __half2*>(&b));
    return *reinterpret_cast<const uint32_t*>(&r);
  }
  __device__ static void mma(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
};

// float32 x multiplies through bfloat16 tensor cores too: the weights of the exact decode are
// exact in bfloat16 and x is split into three bfloat16 terms (split_bf16<3>), so the products
// carry float32 precision.
template <>
struct MmaType<float> : MmaType<at::BFloat16> {};

// 16 bytes of x, x[row, k0 .. k0 + 16/sizeof(T)), as raw bits (zeros past K or for rows >= M).
template <typename T>
__device__ __forceinline__ uint4 load_x16(const T* x, int64_t row, int64_t m, int64_t k, int64_t k0, bool vec16) {
  constexpr int kN = 16 / sizeof(T);
  using Raw = std::conditional_t<sizeof(T) == 4, uint32_t, uint16_t>;
  uint4 r = make_uint4(0, 0, 0, 0);
  if (row >= m || k0 >= k) return r;
  const T* p = x + row * k + k0;
  if (vec16 && k0 + kN <= k) return __ldg(reinterpret_cast<const uint4*>(p));
  Raw v[kN];
#pragma unroll
  for (int i = 0; i < kN; ++i) v[i] = (k0 + i < k) ? __ldg(reinterpret_cast<const Raw*>(p + i)) : Raw{0};
  memcpy(&r, v, sizeof(r));
  return r;
}

// (a, b) as NP packed bfloat16 pairs, each the rounded remainder of the previous ones, whose sum
// is exact: float16 needs NP = 2 (11 significant bits), float32 NP = 3 (24 bits).
template <int NP>
__device__ __forceinline__ void split_bf16(float a, float b, uint32_t (&parts)[NP]) {
#pragma unroll
  for (int i = 0; i < NP; ++i) {
    const __nv_bfloat162 h = __floats2bfloat162_rn(a, b);
    parts[i] = *reinterpret_cast<const uint32_t*>(&h);
    const float2 f = __bfloat1622float2(h);
    a -= f.x;
    b -= f.y;
  }
}

__device__ __forceinline__ uint32_t word_of(const uint4& v, int i) {
  return i == 0 ? v.x : (i == 1 ? v.y : (i == 2 ? v.z : v.w));
}

// Programmatic dependent launch (sm_90): a kernel launched with programmatic stream
// serialization may start before the previous kernel on its stream ends; grid_dependency_wait
// blocks until that kernel has completed and its memory is visible, and the previous kernel's
// allow_dependent_launch lets the dependent one start early. Both are no-ops before sm_90 and for
// kernels launched the ordinary way.
__device__ __forceinline__ void grid_dependency_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
__device__ __forceinline__ void allow_dependent_launch() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

// Launches kernel<<<grid, threads, smem, stream>>>(args), with programmatic stream serialization
// where `programmatic` (the kernel then calls grid_dependency_wait before it reads what the
// previous kernel on the stream writes) and in thread-block clusters of `cluster` blocks along x
// where it is above 0 (grid.x a multiple of it; sm_90).
template <typename Args>
void launch_kernel(void (*kernel)(Args), dim3 grid, int threads, size_t smem, cudaStream_t stream, const Args& args,
                   bool programmatic, unsigned cluster = 0) {
  if (!programmatic && cluster == 0) {
    kernel<<<grid, threads, smem, stream>>>(args);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return;
  }
  cudaLaunchAttribute attrs[2]{};
  unsigned n_attrs = 0;
  if (programmatic) {
    attrs[n_attrs].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attrs[n_attrs].val.programmaticStreamSerializationAllowed = 1;
    ++n_attrs;
  }
  if (cluster > 0) {
    attrs[n_attrs].id = cudaLaunchAttributeClusterDimension;
    attrs[n_attrs].val.clusterDim.x = cluster;
    attrs[n_attrs].val.clusterDim.y = 1;
    attrs[n_attrs].val.clusterDim.z = 1;
    ++n_attrs;
  }
  cudaLaunchConfig_t config{};
  config.gridDim = grid;
  config.blockDim = dim3(static_cast<unsigned>(threads));
  config.dynamicSmemBytes = smem;
  config.stream = stream;
  config.attrs = attrs;
  config.numAttrs = n_attrs;
  C10_CUDA_CHECK(cudaLaunchKernelEx(&config, kernel, args));
}

}  // namespace apt::fp4::cuda
