// sm_90 bulk copies (cp.async.bulk: the one-dimensional form of the Tensor Memory Accelerator)
// from global to shared memory, completed on an mbarrier that counts the bytes still to land.
// Every helper is a no-op before sm_90 (the kernels that use them are launched on sm_90+ only).
#pragma once

#include <cstdint>

namespace apt::fp4::cuda {

__device__ __forceinline__ uint32_t shared_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// One thread: an mbarrier that completes a phase on one arrival plus the bytes announced by it.
// The block must __syncthreads() after its mbarrier_init calls (fence_mbarrier_init first).
__device__ __forceinline__ void mbarrier_init(uint64_t* bar) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;" ::"r"(shared_addr(bar)) : "memory");
#endif
}
__device__ __forceinline__ void fence_mbarrier_init() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
#endif
}

// The phase's one arrival, announcing `bytes` that bulk copies completing on `bar` will deliver.
// Relaxed: a release arrival would first wait for all of this thread's loads in flight.
__device__ __forceinline__ void mbarrier_arrive_expect_tx(uint64_t* bar, uint32_t bytes) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("mbarrier.arrive.expect_tx.relaxed.cta.shared::cta.b64 _, [%0], %1;" ::"r"(shared_addr(bar)),
               "r"(bytes)
               : "memory");
#endif
}

// `bytes` (a multiple of 16; both addresses 16-byte aligned) from global `src` to shared `dst`.
__device__ __forceinline__ void bulk_copy_to_shared(void* dst, const void* src, uint32_t bytes, uint64_t* bar) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::"r"(
                   shared_addr(dst)),
               "l"(src), "r"(bytes), "r"(shared_addr(bar))
               : "memory");
#endif
}

// Waits until the phase of parity `parity` (0, 1, 0, ... for the barrier's uses) has completed;
// the bytes of its copies are then visible to this thread.
__device__ __forceinline__ void mbarrier_wait(uint64_t* bar, uint32_t parity) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile(
      "{\n"
      ".reg .pred done;\n"
      "WAIT:\n"
      "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
      "@!done bra WAIT;\n"
      "}\n" ::"r"(shared_addr(bar)),
      "r"(parity)
      : "memory");
#endif
}

}  // namespace apt::fp4::cuda
