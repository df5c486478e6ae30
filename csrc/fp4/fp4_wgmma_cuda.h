// Hopper warpgroup MMA (wgmma.mma_async, sm_90a only) for the tiled FP4 GEMM
// (fp4_gemm_tiled_kernel_cuda.h): A (the decoded weights, 64 rows = four warps' 16-row tiles) from
// registers, B (x) from shared memory through a matrix descriptor, float32 accumulators.
//
// Per warp, the A registers of wgmma .m64nNk16 (bf16) are the mma.sync m16n8k16 A fragment of the
// warp's 16 rows (PTX ISA, "Register Fragments", wgmma .m64nNk16), and the accumulator of each
// 8-column block i of N is the m16n8k16 C fragment (rows g / g + 8, columns 8 i + 2 t, + 1): so the
// GEMM's decode (decode_word) and epilogue (store_outputs) serve both instructions unchanged.
//
// B is K-major without swizzling: core matrices of 8 rows (of x) x 16 bytes (8 bfloat16 of K),
// each 128 contiguous bytes; the descriptor's leading byte offset steps to the next core matrix
// along K, its stride byte offset to the next 8 rows (PTX ISA, "Shared Memory Matrix Layout",
// canonical K-major layout ((8, m), (T, 2k)) : ((1T, SBO), (1, LBO))). The tensor cores read B's
// k-slots in that order, so B's k-slot kk of 16-column slice j must hold the column of x that A's
// k-slot kk holds: tiled::a_fragment_column(j, kk), which is not column 16 j + kk (the tiled
// layout gives lane t columns 8t .. 8t + 7 of every 32). So each 16-byte row of a core matrix
// gathers four 4-byte words (two columns each) from four 16-byte chunks of x's row: x is copied
// word by word into place (wgmma_x_word_row / _col), or copied by chunks and transposed into place
// in shared memory (wgmma_x_word); both are checked against the descriptor's reads below.
//
// Compiled only for sm_90a (__CUDA_ARCH_FEAT_SM90_ALL); other targets get a trap, and the host
// never launches a wgmma kernel unless the build has sm_90a code (kWgmmaBuilt) and the device is
// compute capability 9.0.
#pragma once
#include <cstdint>

#include "fp4/fp4_tiled_layout.h"

namespace apt::fp4::cuda {

// One staged 128-column step of x (8 XB rows) for wgmma: the descriptor of slice j (columns
// 16 j .. 16 j + 15 of A's k order) starts at kWgmmaSliceBytes * j; its two core matrices along K
// are kWgmmaLbo apart and its groups of 8 rows kWgmmaSbo apart (the 16 core matrices of a step).
constexpr uint32_t kWgmmaCoreBytes = 128;
constexpr uint32_t kWgmmaLbo = kWgmmaCoreBytes;
constexpr uint32_t kWgmmaSliceBytes = 2 * kWgmmaCoreBytes;
constexpr uint32_t kWgmmaSbo = 8 * kWgmmaSliceBytes;
// The 4-byte word w of a staged step (bytes 4 w .. 4 w + 3): core matrix cm = (w / 32) % 16 of the
// rows' group w / 512 (slice cm / 2, k-slots 8 (cm % 2) ..), row (w % 32) / 4 of it and k-slots
// 2 (w % 4), + 1 of that row. wgmma_x_word_row: its row of x within the block's 8 XB rows;
// wgmma_x_word_col: the first of its two columns of x within the step. Consecutive words of a
// warp's copy go to 32 different banks.
__host__ __device__ constexpr int wgmma_x_word_row(int w) { return 8 * (w / 512) + (w % 32) / 4; }
__host__ __device__ constexpr int wgmma_x_word_col(int w) {
  return tiled::a_fragment_column((w / 32) % 16 / 2, 8 * ((w / 32) % 2) + 2 * (w % 4));
}
// The staged word that holds columns col, col + 1 (col even) of row n: the inverse of the two
// above. Column 32 c + 8 t + 2 v sits in core matrix 4 c + v at position t, so the words of
// columns 32 c + 2 v, + 8, + 16, + 24 (the v-th word of the four 16-byte chunks of a 32-column
// group) are four consecutive words: one 16-byte row of a core matrix.
__host__ __device__ constexpr int wgmma_x_word(int n, int col) {
  return 512 * (n / 8) + 32 * (4 * (col / 32) + (col % 8) / 2) + 4 * (n % 8) + (col % 32) / 8;
}

// What the tensor cores read for slice j, k-slot kk, row n of B (the canonical K-major layout at
// the descriptor's offsets) is the word staged for row n and A's column of k-slot kk.
constexpr bool wgmma_x_staging_matches_a() {
  for (int j = 0; j < 8; ++j)
    for (int kk = 0; kk < 16; ++kk)
      for (int n = 0; n < 128; ++n) {
        const uint32_t byte = kWgmmaSliceBytes * j + kWgmmaLbo * (kk / 8) + kWgmmaSbo * (n / 8) + 16 * (n % 8) + 2 * (kk % 8);
        const int w = static_cast<int>(byte / 4), e = static_cast<int>(byte % 4) / 2;
        if (wgmma_x_word_row(w) != n || wgmma_x_word_col(w) + e != tiled::a_fragment_column(j, kk)) return false;
      }
  for (int w = 0; w < 16 * 512; ++w) {
    const int n = wgmma_x_word_row(w), col = wgmma_x_word_col(w);
    if (wgmma_x_word(n, col) != w || wgmma_x_word(n, col - col % 32 + col % 8) + (col % 32) / 8 != w) return false;
  }
  return true;
}
static_assert(wgmma_x_staging_matches_a(), "wgmma: staged x does not meet the A fragments' columns");

#if defined(APT_WITH_SM90A)
constexpr bool kWgmmaBuilt = true;
#else
constexpr bool kWgmmaBuilt = false;
#endif

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define APT_WGMMA_ASM(...) asm volatile(__VA_ARGS__)
#else
#define APT_WGMMA_ASM(...) __trap()
#endif

// Matrix descriptor of a K-major, unswizzled bfloat16 operand at shared address `smem_addr`
// (16-byte aligned): lbo = bytes between core matrices adjacent along K, sbo = bytes between
// groups of 8 rows. Swizzle mode 0 and base offset 0 (bits 62-63, 49-51).
__device__ __forceinline__ uint64_t wgmma_desc_k_major(uint32_t smem_addr, uint32_t lbo, uint32_t sbo) {
  return static_cast<uint64_t>((smem_addr & 0x3FFFFu) >> 4) | (static_cast<uint64_t>((lbo >> 4) & 0x3FFFu) << 16) |
         (static_cast<uint64_t>((sbo >> 4) & 0x3FFFu) << 32);
}

// The descriptor `desc` moved `bytes` (a multiple of 16) further: its start address field (the
// low 14 bits, 16-byte units) cannot carry into the next field for shared addresses below
// 256 KiB (a multiprocessor has at most 228 KiB), so only the low word changes (a 32-bit add).
__device__ __forceinline__ uint64_t wgmma_desc_advance(uint64_t desc, uint32_t bytes) {
  return (desc & 0xFFFFFFFF00000000ull) | (static_cast<uint32_t>(desc) + (bytes >> 4));
}

// Orders this thread's register writes (A, accumulators) before the next wgmma reads them.
__device__ __forceinline__ void wgmma_fence() { APT_WGMMA_ASM("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { APT_WGMMA_ASM("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
// Waits until at most N committed groups of this warpgroup are still running.
template <int N>
__device__ __forceinline__ void wgmma_wait() {
  APT_WGMMA_ASM("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
// Makes this thread's generic-proxy writes to shared memory (cp.async, st.shared) visible to the
// async proxy that wgmma reads B through; a barrier after it publishes every thread's.
__device__ __forceinline__ void fence_proxy_async_shared() {
  APT_WGMMA_ASM("fence.proxy.async.shared::cta;\n" ::: "memory");
}

// Shared-memory barriers (mbarrier) and the bulk copy (TMA, one dimension) that fill the bulk
// product's x stages (GemmProduct::kWgmmaBulk): one thread arms a stage's barrier with the bytes to
// expect and starts the copy, which completes the barrier's phase when the bytes have landed; every
// thread waits for that phase. `bar` and `dst` are shared-memory addresses (__cvta_generic_to_shared).
__device__ __forceinline__ void mbarrier_init(uint32_t bar, uint32_t arrivals) {
  APT_WGMMA_ASM("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(arrivals) : "memory");
}
// Makes initialised barriers visible to the async proxy (the bulk copies); a block barrier after it
// makes them visible to the other threads.
__device__ __forceinline__ void mbarrier_init_fence() {
  APT_WGMMA_ASM("fence.mbarrier_init.release.cluster;\n" ::: "memory");
}
__device__ __forceinline__ void mbarrier_inval(uint32_t bar) {
  APT_WGMMA_ASM("mbarrier.inval.shared::cta.b64 [%0];\n" ::"r"(bar) : "memory");
}
// `bytes` global -> shared (16-byte aligned, a multiple of 16), completing the current phase of
// `bar` (armed by this thread's arrive with the byte count).
__device__ __forceinline__ void bulk_copy_to_shared(uint32_t dst, const void* src, uint32_t bytes, uint32_t bar) {
  APT_WGMMA_ASM("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes) : "memory");
  APT_WGMMA_ASM("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n"
                ::"r"(dst), "l"(src), "r"(bytes), "r"(bar)
                : "memory");
}
// Waits until phase `parity` (0 or 1) of `bar` has completed.
__device__ __forceinline__ void mbarrier_wait(uint32_t bar, uint32_t parity) {
  uint32_t done = 0;
  while (!done) {
    APT_WGMMA_ASM(
        "{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\nselp.u32 %0, 1, 0, p;\n}\n"
        : "=r"(done)
        : "r"(bar), "r"(parity)
        : "memory");
#if !defined(__CUDA_ARCH_FEAT_SM90_ALL)
    done = 1;  // other targets trap above
#endif
  }
}

// Keeps the compiler from moving accesses of the accumulators across a wgmma wait or fence (the
// registers change asynchronously between a wgmma and its wait).
template <int XB>
__device__ __forceinline__ void wgmma_fence_operands(float (&d)[XB][4]) {
#pragma unroll
  for (int i = 0; i < XB; ++i)
#pragma unroll
    for (int e = 0; e < 4; ++e) asm volatile("" : "+f"(d[i][e])::"memory");
}

#define APT_ACC4(i) "+f"(d[i][0]), "+f"(d[i][1]), "+f"(d[i][2]), "+f"(d[i][3])

// d += A (64 x 16, bf16, registers) * B (16 x 8 XB, bf16, K-major in shared memory at `desc`).
template <int XB>
struct WgmmaBf16;
template <>
struct WgmmaBf16<1> {
  __device__ static void mma(float (&d)[1][4], const uint32_t (&a)[4], uint64_t desc) {
    APT_WGMMA_ASM(
        "wgmma.mma_async.sync.aligned.m64n8k16.f32.bf16.bf16 "
        "{%0, %1, %2, %3}, {%4, %5, %6, %7}, %8, 1, 1, 1, 0;\n"
        : APT_ACC4(0)
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc));
  }
};
template <>
struct WgmmaBf16<2> {
  __device__ static void mma(float (&d)[2][4], const uint32_t (&a)[4], uint64_t desc) {
    APT_WGMMA_ASM(
        "wgmma.mma_async.sync.aligned.m64n16k16.f32.bf16.bf16 "
        "{%0, %1, %2, %3, %4, %5, %6, %7}, {%8, %9, %10, %11}, %12, 1, 1, 1, 0;\n"
        : APT_ACC4(0), APT_ACC4(1)
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc));
  }
};
template <>
struct WgmmaBf16<4> {
  __device__ static void mma(float (&d)[4][4], const uint32_t (&a)[4], uint64_t desc) {
    APT_WGMMA_ASM(
        "wgmma.mma_async.sync.aligned.m64n32k16.f32.bf16.bf16 "
        "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15}, "
        "{%16, %17, %18, %19}, %20, 1, 1, 1, 0;\n"
        : APT_ACC4(0), APT_ACC4(1), APT_ACC4(2), APT_ACC4(3)
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc));
  }
};
template <>
struct WgmmaBf16<8> {
  __device__ static void mma(float (&d)[8][4], const uint32_t (&a)[4], uint64_t desc) {
    APT_WGMMA_ASM(
        "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 "
        "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, "
        "%23, %24, %25, %26, %27, %28, %29, %30, %31}, "
        "{%32, %33, %34, %35}, %36, 1, 1, 1, 0;\n"
        : APT_ACC4(0), APT_ACC4(1), APT_ACC4(2), APT_ACC4(3), APT_ACC4(4), APT_ACC4(5), APT_ACC4(6), APT_ACC4(7)
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc));
  }
};
template <>
struct WgmmaBf16<16> {
  __device__ static void mma(float (&d)[16][4], const uint32_t (&a)[4], uint64_t desc) {
    APT_WGMMA_ASM(
        "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 "
        "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, "
        "%23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, "
        "%44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, "
        "{%64, %65, %66, %67}, %68, 1, 1, 1, 0;\n"
        : APT_ACC4(0), APT_ACC4(1), APT_ACC4(2), APT_ACC4(3), APT_ACC4(4), APT_ACC4(5), APT_ACC4(6), APT_ACC4(7),
          APT_ACC4(8), APT_ACC4(9), APT_ACC4(10), APT_ACC4(11), APT_ACC4(12), APT_ACC4(13), APT_ACC4(14),
          APT_ACC4(15)
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc));
  }
};

#undef APT_ACC4
#undef APT_WGMMA_ASM

}  // namespace apt::fp4::cuda
