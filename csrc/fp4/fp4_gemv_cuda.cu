// Host side of apt::fp4_linear_tiled's CUDA GEMV (the kernel and what it computes:
// fp4_gemv_kernel_cuda.h): the launch-shape heuristic and APT_FP4_GEMV, the packed copy of x, the
// routes between the GEMV, the tiled GEMM (fp4_gemm_tiled_cuda.h) and the norm ahead, and the ops
// fp4_linear_tiled, fp4_linear_tiled_sumsq and fp4_linear_tiled_swiglu on CUDA.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <tuple>

#include "fp4/fp4_format.h"
#include "fp4/fp4_gemm_tiled_cuda.h"
#include "fp4/fp4_gemv_kernel_cuda.h"
#include "fp4/fp4_linear_cuda.h"

namespace apt::fp4::cuda {
namespace {

constexpr int kMinStepsPerPart = 4;  // the heuristic's K parts keep at least this many steps each
// The SwiGLU GEMV takes its RMSNorm in the kernel up to this many rows of 16-bit x (8-row blocks);
// above (16-row blocks) ATen normalises x first. At 16 rows on 28672 x 4096 (H100, fp4_norm_fusion.py)
// the fused norm took 37.19 / 37.25 / 44.33 us (nvfp4 / mxfp4 / nf4) and the handoff 36.76 /
// 36.28 / 41.54 against 33.45 / 33.29 / 38.20 with the norm ahead (F.rms_norm); at one row the
// fused norm was level with or ahead of it (30.35 / 29.67 / 32.47 against 30.70 / 29.75 / 32.78)
// and the handoff faster.
constexpr int64_t kSwigluFusedNormMaxRows = 8;

// x [m, x_stride] (16-bit, x_stride16 16-byte pieces per row) in the order the kXPacked kernels
// read it: piece ((((mb * steps + s) * 4 + c) * mt + i) * 8 + g) * 4 + t holds columns 128 s + 32 c
// + 8 t .. + 7 of row (mb * mt + i) * 8 + g (zero past row m - 1), so that the 32 lanes' pieces of
// one (step, chunk, row block) are 512 contiguous bytes. One thread per piece (grid-stride).
__global__ void pack_x_kernel(const uint4* __restrict__ x, uint4* __restrict__ out, int64_t m, int64_t x_stride16,
                              int64_t steps, int mt, int64_t pieces) {
  allow_dependent_launch();
  for (int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; idx < pieces;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    int64_t q = idx;
    const int t = static_cast<int>(q & 3);
    q >>= 2;
    const int g = static_cast<int>(q & 7);
    q >>= 3;
    const int i = static_cast<int>(q % mt);
    q /= mt;
    const int c = static_cast<int>(q & 3);
    q >>= 2;
    const int64_t s = q % steps, mb = q / steps;
    const int64_t row = (mb * mt + i) * 8 + g;
    out[idx] = row < m ? x[row * x_stride16 + s * 16 + c * 4 + t] : make_uint4(0u, 0u, 0u, 0u);
  }
}

// The heuristic's tiles per warp for blocks of `mt` x tiles of 8 rows and `m` rows of x in all:
// two (x loaded per chunk, each x value feeding 32 weight rows) above 16 rows of x, one up to 16.
// Round-10a sweep (fp4_gemv_sweep_NVIDIA_H200_round10a.json, 16-row blocks, do_bench): at M = 64
// two tiles took 18.0 / 50.6 / 43.5 / 166.1 us on the four shapes against 18.8 / 53.4 / 50.0 /
// 184.7 us with one, at M = 32 14.1 / 31.2 / 29.2 / 97.0 against 14.3 / 34.3 / 30.4 / 100.7; at
// M = 16 one tile stays (12.0 / 21.4 / 20.4 / 63.9 against 13.3 / 21.4 / 28.9 / 63.4 us).
constexpr int default_tiles_per_warp(int mt, int64_t m) { return mt == 1 || m <= 16 ? 1 : 2; }
constexpr int default_x_mode(int mt, int tw) { return tw == 2 || mt == 4 ? kXPerChunk : (mt == 1 ? kXDoubleBuffer : kXSingleBuffer); }

// Packed x (pack_x_kernel, then the GEMV by programmatic dependent launch) for 16-row blocks with
// one tile per warp on weights of at least 512 tiles (8192 rows) and 16384 (tile, step) blocks of
// 1 KB: at 16 rows x's L1 wavefronts limit the GEMV (round 16's ncu: L1/TEX 72% busy), and packing
// halves them. Round 16d (fp4_gemv_sweep_NVIDIA_H200_round16d.json, M = 16, do_bench): 12.4 / 20.5
// / 20.4 / 54.2 us on the four shapes against 11.0 / 21.6 / 20.2 / 63.1 us: 4096 x 4096 loses the
// copy. 4096 x 14336 (256 tiles, K split 8 ways) gains nothing: round 17a
// (fp4_gemv_sweep_NVIDIA_H200_round17a.json, 9 / 12 / 16 rows) 20.1 / 20.2 / 20.2 us packed against
// 18.9 / 20.2 / 20.1 us (the same kernel timed twice in round 17b: 19.9 and 19.0 us at 9 rows).
constexpr int64_t kPackedXMinTiles = 512, kPackedXMinTileSteps = 16384;
constexpr int heuristic_x_mode(bool packed, int mt, int tw, int64_t n_tiles, int64_t steps) {
  return packed && mt == 2 && tw == 1 && n_tiles >= kPackedXMinTiles && n_tiles * steps >= kPackedXMinTileSteps
             ? kXPacked
             : default_x_mode(mt, tw);
}

// APT_FP4_GEMV="rw,kw,stages[,mt[,xm[,balance[,evict_first[,tw[,min_steps]]]]]]" (read at each call,
// so tests can set it in-process) overrides the heuristic: for tuning sweeps. rw = kw = 0 keeps the
// heuristic's block shape, mt = 0 its rows of x, xm = -1 its x mode, tw = 0 its tiles per warp;
// balance and evict_first default to 1; min_steps (with rw = kw = 0) replaces kMinStepsPerPart, the
// fewest K steps the heuristic leaves a K part (0: kMinStepsPerPart). A launch shape kernel_built
// does not build for the format and x dtype falls back to the heuristic's stages, x mode and tiles
// per warp (and 32 rows of x to 16).
bool env_config(GemvConfig& cfg, int& min_steps) {
  const char* env = std::getenv("APT_FP4_GEMV");
  if (env == nullptr || *env == '\0') return false;
  int rw = 0, kw = 0, s = 0, mt = 0, xm = -1, balance = 1, evict_first = 1, tw = 0, part_steps = 0;
  const int got = std::sscanf(env, "%d,%d,%d,%d,%d,%d,%d,%d,%d", &rw, &kw, &s, &mt, &xm, &balance, &evict_first,
                              &tw, &part_steps);
  const bool shape_ok = (rw == 0 && kw == 0) || (rw >= 1 && kw >= 1 && rw * kw <= kMaxWarps);
  TORCH_CHECK_VALUE(got >= 3 && shape_ok && (mt == 0 || mt == 1 || mt == 2 || mt == 4) && xm >= -1 &&
                        xm <= kXPacked && tw >= 0 && tw <= 2 && part_steps >= 0,
                    "APT_FP4_GEMV: expected 'rw,kw,stages[,mt[,xm[,balance[,evict_first[,tw[,min_steps]]]]]]' with "
                    "rw * kw <= 8 (or both 0), mt 0, 1, 2 or 4, xm in -1..4, tw in 0..2 and min_steps >= 0, got '",
                    env, "'");
  cfg = {rw, kw, s, mt, xm, balance != 0, evict_first != 0, tw};
  if (part_steps > 0) min_steps = part_steps;
  return true;
}

// About 16 warps per multiprocessor (each with a pipeline of loads in flight): K split only as far
// as each part keeps one pipeline's worth of steps. More than 8 rows of x: blocks of 16 rows (each
// weight decoded once for 16 rows; round-7 sweeps: at M = 16 the largest shape took 65.0 us this
// way, fp4_gemv_sweep_NVIDIA_H200_round7b.json, against 84.9 us with two 8-row blocks per tile,
// round7a). Returns a shape kernel_built builds for (sweep, packed_x_built(fp32x), fp32x).
GemvConfig choose_config(Format f, bool sweep, bool fp32x, int64_t m, int64_t n_tiles, int64_t steps, int sms) {
  // nf4 fills its 32 KB pair table once per block: it keeps blocks of 8 warps (with balance, the
  // 2-warp blocks of 14336 x 4096 ran nf4 at 1.21x bf16 against nvfp4's 2.22x in
  // fp4_linear_NVIDIA_H200.json of the round-6 session, and at 1.55x against 2.23x unbalanced in
  // fp4_gemv_sweep_NVIDIA_H200_round8a.json).
  GemvConfig cfg{0, 0, kDefaultStages, 0, -1, f != Format::NF4, true, 0};
  int min_steps = kMinStepsPerPart;
  const bool from_env = env_config(cfg, min_steps);
  if (fp32x) {
    cfg.mt = 1;
  } else if (cfg.mt == 0 || (cfg.mt == 4 && !sweep)) {
    cfg.mt = m <= 8 ? 1 : 2;
  }
  if (cfg.tw == 0) cfg.tw = fp32x ? 1 : default_tiles_per_warp(cfg.mt, m);
  const bool packed = packed_x_built(fp32x);
  if (cfg.xm < 0) cfg.xm = heuristic_x_mode(packed, cfg.mt, cfg.tw, n_tiles, steps);
  if (!kernel_built(sweep, packed, fp32x, cfg.mt, cfg.tw, cfg.s, cfg.xm)) {
    cfg.s = kDefaultStages;
    cfg.tw = fp32x ? 1 : default_tiles_per_warp(cfg.mt, m);
    cfg.xm = default_x_mode(cfg.mt, cfg.tw);
  }
  if (from_env && cfg.rw > 0) return cfg;
  const int64_t m_blocks = (m + 8 * cfg.mt - 1) / (8 * cfg.mt), units = (n_tiles + cfg.tw - 1) / cfg.tw;
  const int64_t max_kw = std::max<int64_t>(1, std::min<int64_t>(steps / min_steps, kMaxWarps));
  // K parts: the largest power of two up to the warps wanted per warp's tiles (round 2's sweep:
  // e.g. 896 tiles -> kw 2 beat kw 3 or 4).
  const int64_t want = (int64_t{16} * sms + units * m_blocks - 1) / (units * m_blocks);
  cfg.kw = 1;
  while (cfg.kw * 2 <= want && cfg.kw * 2 <= max_kw) cfg.kw *= 2;
  cfg.rw = kMaxWarps / cfg.kw;
  // On by default: on the round-6 sweep (fp4_gemv_sweep_NVIDIA_H200_round6.json) it took the
  // largest shape at M = 1 from 50.4 to 45.6 us and changed the others by at most a few percent.
  if (cfg.balance) {
    // The busiest multiprocessor gets ceil(blocks / sms) blocks of rw warps' tiles each: take the
    // rw that gives it the fewest (ties: the larger block). E.g. 1792 tiles on 132 SMs: rw 8 -> 2
    // blocks of 8 = 16 tiles, rw 7 -> 2 blocks of 7 = 14 (the even share is 13.6).
    int64_t best = std::numeric_limits<int64_t>::max();
    for (int rw = kMaxWarps / cfg.kw; rw >= 1; --rw) {
      const int64_t blocks = (units + rw - 1) / rw * m_blocks;
      const int64_t busiest = (blocks + sms - 1) / sms * rw;
      if (busiest < best) {
        best = busiest;
        cfg.rw = rw;
      }
    }
  }
  return cfg;
}

// x2 [m, steps * 128] (16-bit, contiguous, 16-byte aligned) packed by pack_x_kernel on `stream`
// for blocks of 8 * mt rows.
at::Tensor pack_x(const at::Tensor& x2, int64_t m_blocks, int mt, int64_t steps, cudaStream_t stream) {
  const int64_t pieces = m_blocks * steps * 4 * mt * 32;
  at::Tensor out = at::empty({pieces * 8}, x2.options());
  pack_x_kernel<<<static_cast<unsigned>(copy_blocks(pieces, x2.get_device())), kCopyThreads, 0, stream>>>(
      static_cast<const uint4*>(x2.const_data_ptr()), static_cast<uint4*>(out.mutable_data_ptr()), x2.size(0),
      x2.size(1) / 8, steps, mt, pieces);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

// fp4_linear_tiled (gelu) and fp4_linear_tiled_swiglu (swiglu: out [..., n / 2]), with the
// RMSNorm (rms_eps) and the residual: fused into the GEMV; on the GEMM's route x is normalised by
// ATen first (rounded to x's dtype: the GEMM reads bfloat16) and the residual added by ATen after.
// rms_sumsq: the norm's sums in parts (fp4_linear_tiled's); out_sumsq (not with swiglu): where
// given, it receives the output's sums of squares per tile ([..., n_tiles] float32:
// fp4_linear_tiled_sumsq's).
at::Tensor tiled_linear_cuda(const at::Tensor& x, const at::Tensor& tiles_in, const at::Tensor& scales_in,
                             const at::Tensor& out_scale, const c10::optional<at::Tensor>& bias,
                             const std::string& fmt, int64_t n, int64_t k, bool gelu, bool swiglu,
                             c10::optional<double> rms_eps, const c10::optional<at::Tensor>& residual,
                             const c10::optional<at::Tensor>& rms_sumsq, at::Tensor* out_sumsq = nullptr) {
  const Format f = check_tiled_weight(tiles_in, scales_in, out_scale, fmt, n, k);
  const int64_t n_out = swiglu ? n / 2 : n;
  check_tiled_linear_args(x, tiles_in, bias, n, k, rms_eps, residual, swiglu ? 0 : n_out, rms_sumsq);
  if (swiglu) check_swiglu_rows(n);
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor x2 = x.reshape({-1, k}).contiguous();
  const int64_t m = x2.size(0);
  auto out_sizes = x.sizes().vec();
  out_sizes.back() = n_out;
  at::Tensor out = at::empty({m, n_out}, x.options());
  if (out_sumsq != nullptr) {
    auto sumsq_sizes = x.sizes().vec();
    sumsq_sizes.back() = tiles_in.size(0);
    *out_sumsq = at::empty(sumsq_sizes, x.options().dtype(at::kFloat));
  }
  if (m == 0) return out.view(out_sizes);
  const std::optional<GemmTiledConfig> gemm = choose_gemm(m, n, k, f, x.scalar_type(), x.get_device());
  // The norm ahead, by ATen's RMSNorm (one kernel, x rounded to its dtype after it; rms_sumsq not
  // needed): on the GEMM's route, and for the SwiGLU GEMV's 16-row blocks of 16-bit x (above
  // kSwigluFusedNormMaxRows rows), where its fused norm and the handoff lost to it in all formats.
  const bool swiglu_norm_ahead = swiglu && m > kSwigluFusedNormMaxRows && x.scalar_type() != at::kFloat;
  const bool norm_ahead = rms_eps.has_value() && (gemm || swiglu_norm_ahead);
  if (norm_ahead) x2 = at::rms_norm(x2, {k}, /*weight=*/c10::nullopt, *rms_eps);
  c10::optional<at::Tensor> sumsq2;  // rms_sumsq as [m, P], contiguous, for the fused norm
  if (rms_sumsq.has_value() && !norm_ahead) sumsq2 = rms_sumsq->reshape({m, rms_sumsq->size(-1)}).contiguous();
  // The kernel reads x in whole 16-byte-aligned steps of 128 columns: pad a K that is not a
  // multiple of 128 with zeros (one small copy; common layer widths need none).
  const int64_t x_stride = tiles_in.size(1) * kStepCols;
  if (x_stride != k || reinterpret_cast<uintptr_t>(x2.const_data_ptr()) % 16 != 0) {
    at::Tensor padded = at::zeros({m, x_stride}, x2.options());
    padded.narrow(1, 0, k).copy_(x2);
    x2 = padded;
  }
  // Tiles and scales may be any view whose per-(tile, step) block is contiguous (fp4_tile makes
  // them tile-major; a step-major copy is read in its own order).
  const int64_t entry_elems = scales_in.size(3);
  const bool inner_dense = tiles_in.stride(2) == 1 && scales_in.stride(3) == 1 &&
                           scales_in.stride(2) == entry_elems && tiles_in.stride(0) % 16 == 0 &&
                           tiles_in.stride(1) % 16 == 0 && scales_in.stride(0) % entry_elems == 0 &&
                           scales_in.stride(1) % entry_elems == 0;
  const at::Tensor tiles = inner_dense ? tiles_in : tiles_in.contiguous();
  const at::Tensor scales = inner_dense ? scales_in : scales_in.contiguous();
  at::Tensor bias_c;
  if (bias.has_value()) bias_c = bias->contiguous();

  TiledLinearArgs args{};
  args.x = x2.const_data_ptr();
  args.m = m;
  args.x_stride = x_stride;
  args.tiles = static_cast<const uint4*>(tiles.const_data_ptr());
  args.tile_stride = tiles.stride(0) / 16;
  args.step_stride = tiles.stride(1) / 16;
  args.scales = scales.const_data_ptr();
  args.sc_tile_stride = scales.stride(0) / entry_elems;
  args.sc_step_stride = scales.stride(1) / entry_elems;
  args.out_scale = out_scale.const_data_ptr<float>();
  args.bias = bias.has_value() ? bias_c.const_data_ptr() : nullptr;
  args.bias_type = !bias.has_value() || bias_c.scalar_type() == at::kFloat ? 0
                   : (bias_c.scalar_type() == at::kBFloat16 ? 1 : 2);
  args.out = out.mutable_data_ptr();
  args.rms_eps = -1.0f;  // no RMSNorm unless the GEMV takes one below
  at::Tensor residual_c;
  if (residual.has_value()) residual_c = residual->reshape({m, n_out}).contiguous();
  args.n = n;
  args.n_tiles = tiles.size(0);
  args.steps = tiles.size(1);

  auto stream = c10::cuda::getCurrentCUDAStream();
  if (gemm) {
    args.evict_first = true;
    if (!swiglu) {
      launch_gemm_tiled(args, f, gelu, *gemm, x2, stream);
      if (residual.has_value()) out.add_(residual_c);  // (store_outputs adds it in the GEMV only)
      if (out_sumsq != nullptr) out_sumsq->copy_(sumsq_parts(out.view(out_sizes)));
      return out.view(out_sizes);
    }
    // the GEMM has no SwiGLU epilogue: its [gate, up] tile pairs, then the SwiGLU by ATen
    const at::Tensor pairs = at::empty({m, n}, x.options());
    args.out = pairs.mutable_data_ptr();
    args.bias = nullptr;
    launch_gemm_tiled(args, f, false, *gemm, x2, stream);
    return swiglu_of_tiled_rows(pairs, bias).to(x.scalar_type()).view(out_sizes);
  }
  args.swiglu = swiglu;
  if (residual.has_value()) args.residual = residual_c.const_data_ptr();
  if (rms_eps.has_value() && !norm_ahead) {
    args.norm_x = x2.const_data_ptr();  // (args.x may become a packed copy below)
    args.rms_eps = static_cast<float>(*rms_eps);
    args.inv_k = 1.0f / static_cast<float>(k);
    if (sumsq2.has_value()) {
      args.norm_sumsq = sumsq2->const_data_ptr<float>();
      args.norm_parts = sumsq2->size(1);
    }
  }
  if (out_sumsq != nullptr) args.out_sumsq = out_sumsq->mutable_data_ptr<float>();
  const bool fp32x = x.scalar_type() == at::kFloat;
  const bool sweep = f == Format::NVFP4 && x.scalar_type() == at::kBFloat16 && !gelu;
  const GemvConfig cfg = choose_config(f, sweep, fp32x, m, args.n_tiles, args.steps, sm_count(x.get_device()));
  args.rw = cfg.rw;
  args.kw = cfg.kw;
  args.evict_first = cfg.evict_first;
  args.steps_per_part = (args.steps + cfg.kw - 1) / cfg.kw;
  // Grid: ceil(ceil(n_tiles / tw) / rw) blocks along N times m_blocks along x.
  const int64_t m_blocks = (m + 8 * cfg.mt - 1) / (8 * cfg.mt);
  at::Tensor x_packed;
  if (cfg.xm == kXPacked) {
    x_packed = pack_x(x2, m_blocks, cfg.mt, args.steps, stream);
    args.x = x_packed.const_data_ptr();
  }
  const int64_t tile_blocks = ((args.n_tiles + cfg.tw - 1) / cfg.tw + cfg.rw - 1) / cfg.rw;
  TORCH_CHECK_VALUE(tile_blocks * m_blocks < (int64_t{1} << 31),
                    "fp4_linear_tiled: too many rows of x for one launch; split x");
  args.m_blocks = static_cast<int>(m_blocks);
  const dim3 grid(static_cast<unsigned>(tile_blocks * m_blocks));

  bool sums_written = false;
  dispatch_format(f, [&](auto fc) {
    sums_written = launch_gemv<decltype(fc)::value>(args, cfg, grid, stream, x.scalar_type(), gelu);
  });
  if (out_sumsq != nullptr && !sums_written) out_sumsq->copy_(sumsq_parts(out.view(out_sizes)));
  return out.view(out_sizes);
}

at::Tensor fp4_linear_tiled_cuda(const at::Tensor& x, const at::Tensor& tiles, const at::Tensor& tile_scales,
                                 const at::Tensor& out_scale, const c10::optional<at::Tensor>& bias,
                                 const std::string& fmt, int64_t n, int64_t k, bool gelu,
                                 c10::optional<double> rms_eps, const c10::optional<at::Tensor>& residual,
                                 const c10::optional<at::Tensor>& rms_sumsq) {
  return tiled_linear_cuda(x, tiles, tile_scales, out_scale, bias, fmt, n, k, gelu, false, rms_eps, residual,
                           rms_sumsq);
}

std::tuple<at::Tensor, at::Tensor> fp4_linear_tiled_sumsq_cuda(
    const at::Tensor& x, const at::Tensor& tiles, const at::Tensor& tile_scales, const at::Tensor& out_scale,
    const c10::optional<at::Tensor>& bias, const std::string& fmt, int64_t n, int64_t k, bool gelu,
    c10::optional<double> rms_eps, const c10::optional<at::Tensor>& residual,
    const c10::optional<at::Tensor>& rms_sumsq) {
  at::Tensor out_sumsq;
  at::Tensor out = tiled_linear_cuda(x, tiles, tile_scales, out_scale, bias, fmt, n, k, gelu, false, rms_eps,
                                     residual, rms_sumsq, &out_sumsq);
  return {out, out_sumsq};
}

at::Tensor fp4_linear_tiled_swiglu_cuda(const at::Tensor& x, const at::Tensor& tiles, const at::Tensor& tile_scales,
                                        const at::Tensor& out_scale, const c10::optional<at::Tensor>& bias,
                                        const std::string& fmt, int64_t n, int64_t k, c10::optional<double> rms_eps,
                                        const c10::optional<at::Tensor>& rms_sumsq) {
  return tiled_linear_cuda(x, tiles, tile_scales, out_scale, bias, fmt, n, k, false, true, rms_eps, c10::nullopt,
                           rms_sumsq);
}

}  // namespace

TORCH_LIBRARY_IMPL(apt, CUDA, m) {
  m.impl("fp4_linear_tiled", &fp4_linear_tiled_cuda);
  m.impl("fp4_linear_tiled_sumsq", &fp4_linear_tiled_sumsq_cuda);
  m.impl("fp4_linear_tiled_swiglu", &fp4_linear_tiled_swiglu_cuda);
}

}  // namespace apt::fp4::cuda
