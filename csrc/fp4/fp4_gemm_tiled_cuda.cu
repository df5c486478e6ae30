// Host side of the CUDA GEMM of apt::fp4_linear_tiled for more rows of x (issue 11: M = 17..4096):
// choose_gemm's measured routes (fp4_gemm_tiled_cuda.h), APT_FP4_GEMM, and launch_gemm_tiled, which
// sets up the grid and the splits' workspace and calls the kernel (fp4_gemm_tiled_kernel_cuda.h has
// the kernel and its design).
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <optional>

#include "fp4/fp4_gemm_tiled_cuda.h"
#include "fp4/fp4_gemm_tiled_kernel_cuda.h"
#include "fp4/fp4_linear_cuda.h"

namespace apt::fp4::cuda {
namespace {

// Whether wgmma kernels can run on CUDA device `device`: built for sm_90a, and the device is
// compute capability 9.0 (sm_90a code runs on no other). Queried once per device.
bool wgmma_available(int device) {
  if (!kWgmmaBuilt) return false;
  static std::array<std::atomic<int>, 256> cache{};  // 0 unknown, 1 no, 2 yes
  TORCH_CHECK(device >= 0 && device < static_cast<int>(cache.size()),
              "fp4_linear_tiled: CUDA device index out of range");
  int v = cache[device].load(std::memory_order_relaxed);
  if (v == 0) {
    int major = 0, minor = 0;
    C10_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
    C10_CUDA_CHECK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device));
    v = major == 9 && minor == 0 ? 2 : 1;
    cache[device].store(v, std::memory_order_relaxed);
  }
  return v == 2;
}

// x2 [m, steps * 128] (bfloat16 as 4-byte words, contiguous) in the bulk product's core-matrix
// order (bulk_x_step_elems): 16-byte piece q of step s of x block b holds the step's words 4 q ..
// 4 q + 3, word w being row 8 XB b + wgmma_x_word_row(w) (one row for the four), columns 128 s +
// wgmma_x_word_col(w), + 1; zero past row m - 1. It also zeroes the n_arrivals stream-K counts,
// so that the GEMM launched behind it (programmatic dependent launch) needs no other kernel. One
// thread per piece (grid-stride).
__global__ void pack_x_core_kernel(const uint32_t* __restrict__ x, uint4* __restrict__ out, int64_t m,
                                   int64_t steps, int xb, int64_t pieces, int* __restrict__ arrivals,
                                   int64_t n_arrivals) {
  allow_dependent_launch();
  const int64_t first = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = first; i < n_arrivals; i += stride) arrivals[i] = 0;
  constexpr int kRowWordsPerStep = kStepCols / 2;
  const int step_pieces = static_cast<int>(bulk_x_step_elems(xb) / 8);  // 8 bfloat16 per piece
  for (int64_t idx = first; idx < pieces; idx += stride) {
    const int q = static_cast<int>(idx % step_pieces);
    const int64_t bs = idx / step_pieces, s = bs % steps, b = bs / steps;
    const int64_t row = b * 8 * xb + wgmma_x_word_row(4 * q);
    uint32_t v[4] = {0u, 0u, 0u, 0u};
    if (row < m) {
      const uint32_t* x_row = x + (row * steps + s) * kRowWordsPerStep;
#pragma unroll
      for (int e = 0; e < 4; ++e) v[e] = x_row[wgmma_x_word_col(4 * q + e) / 2];
    }
    out[idx] = make_uint4(v[0], v[1], v[2], v[3]);
  }
}

}  // namespace

bool gemm_tiled_supported(Format f, at::ScalarType x_dtype) {
  return f != Format::NF4 && x_dtype == at::kBFloat16;
}

namespace {

// APT_FP4_GEMM's routing and configuration, or nullopt where it is not set. Read and parsed at
// every call (about a microsecond where it is set; the tests set it in-process), as the GEMV
// reads APT_FP4_GEMV.
struct EnvGemm {
  int64_t min_rows;
  GemmTiledConfig config;
};
EnvGemm parse_env_gemm(const char* env) {
  long long min_rows = 0;
  int k_parts = 1, splits = 0, tiles = 2, rows = 0, mma = 0, j_group = 1, workers = 0;
  const int got = std::sscanf(env, "%lld,%d,%d,%d,%d,%d,%d,%d", &min_rows, &k_parts, &splits, &tiles, &rows, &mma,
                              &j_group, &workers);
  if (rows == 0) rows = tiles >= 4 ? 32 : 64;
  const auto product = static_cast<GemmProduct>(mma);
  const bool stream_k_ok =
      k_parts == 1 && (product == GemmProduct::kWgmmaTranspose || product == GemmProduct::kWgmmaBulk);
  const bool stream_k = splits == kStreamK || splits == kStreamKWhole || splits == kStreamKCluster;
  const bool cluster_ok = splits != kStreamKCluster || (product == GemmProduct::kWgmmaBulk && j_group == 2);
  const bool workers_ok = workers == 0 || splits == kStreamKWhole ||
                          (splits == kStreamKCluster && workers <= kMaxClusterWorkers);
  const bool ok = got >= 1 && min_rows >= 0 && mma >= 0 && mma <= 3 && k_parts_ok(k_parts, product) &&
                  (splits >= 0 || (stream_k && stream_k_ok)) && cluster_ok &&
                  (product != GemmProduct::kWgmmaBulk || stream_k) && rows % 8 == 0 && workers >= 0 && workers_ok &&
                  warp_tile_built(tiles, rows / 8, product) && j_group_built(j_group, tiles, rows / 8, product) &&
                  gemm_smem_bytes(tiles, rows / 8, k_parts, product) <= kMaxSmem;
  TORCH_CHECK_VALUE(ok, "APT_FP4_GEMM: expected "
                    "'min_rows[,k_parts[,splits[,tiles_per_warp[,rows[,mma[,j_group[,workers]]]]]]]' with "
                    "min_rows >= 0, k_parts 1, 2 or 4, splits >= 0 (0: chosen per shape), -1 (stream-K, with "
                    "k_parts 1 and mma 2 or 3), -2 (the same with whole workers per output block where they fit) or "
                    "-3 (whole workers in thread-block clusters; mma 3 and j_group 2 only), "
                    "mma 0 (mma.sync), 1 (wgmma, x copied word by word), 2 (wgmma, x "
                    "transposed in shared memory; 1 and 2 take k_parts 1 or 2) or 3 (wgmma, x rearranged once and "
                    "copied by bulk copies; k_parts 1 and splits -1, -2 or -3 only) and a warp tile "
                    "(tiles_per_warp, rows of x per block) built for it: "
                    "mma.sync (2, 64), (4, 32), (2, 32) or (1, 64), wgmma (2, 32), (1, 64), (2, 64) or (1, 128), "
                    "mma 1 also (1 or 2, 8 or 16), mma 2 also (2, 128), mma 3 only (2, 64), (2, 128) and "
                    "(1, 128); rows 0 meaning 64 below 4 tiles, else 32; k_parts 4 only with 32 rows, wgmma (1, 128) "
                    "and (2, 128) only with 1 (shared memory); j_group 1, or with mma 2 also 2 for (2, 32), (2, 64), "
                    "(1, 128) and (2, 128), with mma 3 for each of its tiles; workers 0 (as many per output block "
                    "as fit) or, with splits -2, the most per output block, with -3 at most ", kMaxClusterWorkers,
                    "; got '", env, "'");
  return EnvGemm{min_rows, GemmTiledConfig{k_parts, splits, tiles, rows, product, j_group, workers}};
}
std::optional<EnvGemm> env_gemm() {
  const char* env = std::getenv("APT_FP4_GEMM");
  if (env == nullptr || *env == '\0') return std::nullopt;
  return parse_env_gemm(env);
}

// A route's bulk-product tile (two wgmma slices per group) with whole stream-K workers per output
// block, added in thread-block clusters of at most kClusterRouteWorkers where `cluster`.
GemmTiledConfig bulk_whole_workers(int tiles_per_warp, int rows, bool cluster) {
  return GemmTiledConfig{1, cluster ? kStreamKCluster : kStreamKWhole, tiles_per_warp, rows, GemmProduct::kWgmmaBulk,
                         2, cluster ? kClusterRouteWorkers : 0};
}

}  // namespace

std::optional<GemmTiledConfig> choose_gemm(int64_t m, int64_t n, int64_t k, Format f, at::ScalarType x_dtype,
                                          int device) {
  const std::optional<EnvGemm> env = env_gemm();  // parsed first: a bad value raises for every format
  if (!gemm_tiled_supported(f, x_dtype)) return std::nullopt;
  if (env) {
    if (env->min_rows > 0 && m >= env->min_rows) return env->config;
    return std::nullopt;
  }
  // the measured routes of fp4_gemm_tiled_cuda.h: one K part; stream-K where wgmma runs
  if (wgmma_available(device)) {
    const bool wide = n >= kWgmmaWideMinN, tall = n >= kGemmDefaultMinN;
    const bool deep = k >= kStreamKDeepMinK;
    if (wide && m >= kWgmmaMinRows && m <= 32) return GemmTiledConfig{1, kStreamK, 2, 32, GemmProduct::kWgmmaTranspose};
    const bool bulk_2x64_rows = m <= kBulk2x64MaxRows && (wide ? m > 32 : m >= kBulk2x64MinRows);
    // the cluster gather (kStreamKCluster, at most kClusterRouteWorkers) where it was measured faster
    // than the gather through global memory: the 2 x 64 on weights of 8192-16383 rows with K below
    // 8192, the 1 x 128 on weights of fewer rows with K below 8192 and, above 128 rows, K 8192 or more
    if ((tall || deep) && bulk_2x64_rows) return bulk_whole_workers(2, 64, tall && !wide && !deep);
    const bool bulk_1x128_weight = tall || deep || std::min(n, k) >= kBulk1x128MinFeatures;
    const int64_t bulk_1x128_max_rows = tall ? kBulk1x128TallMaxRows : kBulk1x128MaxRows;
    if (!wide && bulk_1x128_weight && m >= kBulk1x128MinRows && m <= bulk_1x128_max_rows)
      return bulk_whole_workers(1, 128, !tall && (!deep || m > kBulk1x128TallMaxRows));
    if ((m >= kWide128MinRows && tall) || (m >= kWide128DeepMinRows && deep) || m >= kWide128AllMinRows)
      return bulk_whole_workers(2, 128, false);
    if (m >= kWgmmaAllMinRows) return GemmTiledConfig{1, kStreamK, 2, 64, GemmProduct::kWgmmaTranspose, 2};
  }
  if (m >= kGemmDefaultMinRows && n >= kGemmDefaultMinN) return GemmTiledConfig{1, 0, 2, 64, GemmProduct::kMmaSync};
  return std::nullopt;
}

void launch_gemm_tiled(TiledLinearArgs args, Format f, bool gelu, const GemmTiledConfig& cfg, const at::Tensor& x,
                       cudaStream_t stream) {
  TORCH_CHECK(gemm_tiled_supported(f, at::kBFloat16), "fp4_linear_tiled: the GEMM path takes nvfp4 and mxfp4 only");
  const int tw = cfg.tiles_per_warp, xb = cfg.rows_per_block / 8;
  const GemmProduct product = cfg.product;
  TORCH_CHECK_VALUE(!is_wgmma(product) || wgmma_available(x.get_device()),
                    "fp4_linear_tiled: the wgmma GEMM (APT_FP4_GEMM's sixth field 1, 2 or 3) needs a build for sm_90a "
                    "(APT_CUDA_ARCHS with 90a) and a compute capability 9.0 GPU");
  TORCH_CHECK_VALUE(cfg.rows_per_block % 8 == 0 && warp_tile_built(tw, xb, product),
                    "fp4_linear_tiled: no GEMM built for ", tw, " tiles per warp and ", cfg.rows_per_block,
                    " rows of x per block");
  TORCH_CHECK_VALUE(j_group_built(cfg.j_group, tw, xb, product),
                    "fp4_linear_tiled: no GEMM built with ", cfg.j_group, " wgmma slices per group for ", tw,
                    " tiles per warp, ", cfg.rows_per_block, " rows of x per block and product ",
                    static_cast<int>(product), " (1 everywhere; with the transposing wgmma product also 2 for 2 x 32, "
                    "2 x 64, 1 x 128 and 2 x 128, with the bulk product for each of its tiles)");
  size_t smem = gemm_smem_bytes(tw, xb, cfg.k_parts, product);
  TORCH_CHECK_VALUE(k_parts_ok(cfg.k_parts, product) && smem <= kMaxSmem,
                    "fp4_linear_tiled: GEMM K parts must be 1, 2 or 4 (wgmma: 1 or 2) within ", kMaxSmem,
                    " bytes of shared memory, got ", cfg.k_parts, " (", smem, " bytes)");
  args.kw = cfg.k_parts;
  args.rw = kWarps / cfg.k_parts;
  const int64_t m_blocks = (args.m + 8 * xb - 1) / (8 * xb);
  const int64_t tile_blocks = (args.n_tiles + tw * args.rw - 1) / (tw * args.rw);
  const int64_t blocks = tile_blocks * m_blocks;
  TORCH_CHECK_VALUE(blocks < (int64_t{1} << 31), "fp4_linear_tiled: too many rows of x for one launch; split x");
  TORCH_CHECK_VALUE(args.steps * kStepCols < (int64_t{1} << 31), "fp4_linear_tiled: the GEMM takes K below 2^31, got ",
                    args.steps * kStepCols, " columns (padded)");
  // Blocks along K: as asked, or (0) enough to fill every multiprocessor (one or two blocks
  // each, as compiled), keeping at least kMinStepsPerPart steps per K part. Stream-K (-1): one
  // block per such slot, sharing every output block's K steps evenly (at least kMinStepsPerPart
  // each).
  const int64_t slots = static_cast<int64_t>(sm_count(x.get_device())) * blocks_per_sm(tw, xb);
  const int64_t sums = static_cast<int64_t>(tw) * xb * 4 * args.rw * 32;  // floats of one block's sums
  args.m_blocks = static_cast<int>(m_blocks);
  args.out_blocks = blocks;
  const bool stream_k = cfg.splits < 0;
  at::Tensor partials, arrivals;
  dim3 grid;
  int cluster = 0;  // kStreamKCluster: blocks per cluster
  if (stream_k) {
    TORCH_CHECK_VALUE(cfg.k_parts == 1 &&
                          (product == GemmProduct::kWgmmaTranspose || product == GemmProduct::kWgmmaBulk),
                      "fp4_linear_tiled: the stream-K GEMM (splits -1, -2 or -3) is built for one K part and the "
                      "transposing or bulk wgmma product (sixth field 2 or 3), got ", cfg.k_parts,
                      " K parts and product ", static_cast<int>(product));
    int64_t workers = std::max<int64_t>(1, std::min(slots, blocks * args.steps / kMinStepsPerPart));
    // kStreamKWhole and kStreamKCluster: block b = o s + j takes steps [j steps / s, (j + 1) steps /
    // s) of output block o, s workers per output block: as many as fit the slots, at most half the
    // steps and max_workers (clusters: at most the portable size), at least one (so every block takes
    // a step: each must reach its cluster's barriers)
    if ((cfg.splits == kStreamKWhole && blocks <= slots) || cfg.splits == kStreamKCluster) {
      int64_t per_block = std::min(slots / blocks, args.steps / kMinStepsPerPart);
      if (cfg.max_workers > 0) per_block = std::min<int64_t>(per_block, cfg.max_workers);
      if (cfg.splits == kStreamKCluster) per_block = std::min(per_block, kMaxClusterWorkers);
      per_block = std::max<int64_t>(1, per_block);
      workers = blocks * per_block;
      // a cluster of one block has nothing to add: the plain kernel stores its sums directly, 0.6-2 us
      // faster than the cluster form with one worker per output block (fp4_gemm_tiled_cuda.h)
      if (cfg.splits == kStreamKCluster && per_block > 1) cluster = static_cast<int>(per_block);
    }
    TORCH_CHECK_VALUE(cfg.splits != kStreamKCluster || (product == GemmProduct::kWgmmaBulk && cfg.j_group == 2),
                      "fp4_linear_tiled: stream-K in clusters (splits -3) is built for the bulk product (sixth "
                      "field 3) with 2 wgmma slices per group only");
    if (cluster > 0) {
      // each block leaves its sums in its shared memory for the cluster's gather
      smem = std::max(smem, static_cast<size_t>(sums) * sizeof(float));
      TORCH_CHECK_VALUE(smem <= kMaxSmem, "fp4_linear_tiled: the cluster gather needs ", smem,
                        " bytes of shared memory, more than ", kMaxSmem);
    }
    args.splits = 1;
    args.steps_per_part = args.steps;
    // no workspace where the sums meet in clusters or each output block has one worker
    partials = at::empty({cluster > 0 || workers == blocks ? 0 : 2 * workers * sums}, x.options().dtype(at::kFloat));
    // the bulk product's counts are zeroed by the kernel that rearranges x (below)
    arrivals = product == GemmProduct::kWgmmaBulk ? at::empty({blocks}, x.options().dtype(at::kInt))
                                                  : at::zeros({blocks}, x.options().dtype(at::kInt));
    args.partials = partials.mutable_data_ptr<float>();
    args.arrivals = arrivals.mutable_data_ptr<int>();
    grid = dim3(static_cast<unsigned>(workers));
  } else {
    int64_t splits = cfg.splits;
    if (splits == 0) splits = blocks >= slots ? 1 : (slots + blocks - 1) / blocks;
    splits = std::max<int64_t>(1, std::min<int64_t>({splits, args.steps / (kMinStepsPerPart * args.kw), 65535}));
    args.splits = static_cast<int>(splits);
    args.steps_per_part = (args.steps + args.kw * splits - 1) / (args.kw * splits);
    if (splits > 1) {
      partials = at::empty({blocks * splits * sums}, x.options().dtype(at::kFloat));
      arrivals = at::zeros({blocks}, x.options().dtype(at::kInt));
      args.partials = partials.mutable_data_ptr<float>();
      args.arrivals = arrivals.mutable_data_ptr<int>();
    }
    grid = dim3(static_cast<unsigned>(blocks), static_cast<unsigned>(splits));
  }
  // The bulk product reads x rearranged into core-matrix order (fp4_gemm_tiled_kernel_cuda.h,
  // bulk_x_step_elems): rows padded with zeros to whole blocks of x, by pack_x_core_kernel, which
  // also zeroes the stream-K counts; the GEMM starts behind it (programmatic dependent launch).
  at::Tensor x_core;
  if (product == GemmProduct::kWgmmaBulk) {
    TORCH_CHECK_VALUE(stream_k, "fp4_linear_tiled: the bulk wgmma product (sixth field 3) is built for stream-K only "
                      "(splits -1, -2 or -3)");
    TORCH_CHECK(x.is_contiguous() && x.size(0) == args.m && x.size(1) == args.steps * kStepCols,
                "fp4_linear_tiled: the bulk product needs x as [m, steps * 128], contiguous");
    const int64_t pieces = m_blocks * args.steps * bulk_x_step_elems(xb) / 8;
    x_core = at::empty({pieces * 8}, x.options());
    pack_x_core_kernel<<<static_cast<unsigned>(copy_blocks(pieces, x.get_device())), kCopyThreads, 0, stream>>>(
        static_cast<const uint32_t*>(x.const_data_ptr()), static_cast<uint4*>(x_core.mutable_data_ptr()), args.m,
        args.steps, xb, pieces, args.arrivals, blocks);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    args.x = x_core.const_data_ptr();
  }
  const GemmKernelLaunch launch{args, grid, smem, stream, tw, xb, product, stream_k, cfg.j_group, cluster};
  if (f == Format::NVFP4) {
    gelu ? launch_gemm_kernel<Format::NVFP4, true>(launch) : launch_gemm_kernel<Format::NVFP4, false>(launch);
  } else {
    gelu ? launch_gemm_kernel<Format::MXFP4, true>(launch) : launch_gemm_kernel<Format::MXFP4, false>(launch);
  }
}

}  // namespace apt::fp4::cuda
