// apt::fp4_tile and apt::fp4_untile: the canonical packed weight (docs/contract.md §3) to and from the
// tiled layout of fp4_tiled_layout.h that the CUDA GEMV reads. Written with ATen ops, so both run
// on every device (the GPU tiles a weight once at load time; CPU tests check the layout).
// Per-op ATen headers and Tensor methods (t.mul(s), not t * s: the operators need all of ATen).
#include <ATen/ops/bitwise_and.h>
#include <ATen/ops/bitwise_left_shift.h>
#include <ATen/ops/bitwise_or.h>
#include <ATen/ops/bitwise_right_shift.h>
#include <ATen/ops/clamp.h>
#include <ATen/ops/constant_pad_nd.h>
#include <ATen/ops/frexp.h>
#include <ATen/ops/full.h>
#include <ATen/ops/full_like.h>
#include <ATen/ops/gelu.h>
#include <ATen/ops/isnan.h>
#include <ATen/ops/ldexp.h>
#include <ATen/ops/matmul.h>
#include <ATen/ops/ones.h>
#include <ATen/ops/ones_like.h>
#include <ATen/ops/rms_norm.h>
#include <ATen/ops/silu.h>
#include <ATen/ops/stack.h>
#include <ATen/ops/tensor.h>
#include <ATen/ops/where.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/zeros_like.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <tuple>
#include <utility>

#include "fp4/fp4_format.h"
#include "fp4/fp4_tile_scales.h"
#include "fp4/fp4_tiled_layout.h"

namespace apt::fp4 {

using namespace apt::fp4::tiled;

at::Tensor unpack_codes(const at::Tensor& packed) {
  const at::Tensor lo = at::bitwise_and(packed, 15), hi = at::bitwise_right_shift(packed, 4);
  return at::stack({lo, hi}, -1).reshape({packed.size(0), packed.size(1) * 2});
}

std::pair<at::Tensor, at::Tensor> encode_nvfp4_scales(const at::Tensor& scales) {
  const at::Tensor s = scales.to(at::kFloat);
  TORCH_CHECK_VALUE(!at::isnan(s).any().item<bool>(),
                    "scales: an nvfp4 block scale is NaN; the tiled layout needs finite scales");
  TORCH_CHECK_VALUE(!s.lt(0).any().item<bool>(),
                    "scales: an nvfp4 block scale is negative; the tiled layout needs scales >= 0");
  const at::Tensor zero = s.eq(0);
  auto [mant, ex] = at::frexp(at::where(zero, at::ones_like(s), s));  // s = mant * 2^ex, mant in [0.5, 1)
  const at::Tensor e = ex.to(at::kInt).sub(1);                       // s = 2^e * (1 + f)
  const at::Tensor m = mant.mul(16).sub(8).round().to(at::kInt);     // f = m / 8, exact for E4M3
  at::Tensor byte = at::bitwise_or(at::bitwise_left_shift(e.sub(kNvfp4MinExp), 3), m);
  byte = at::where(zero, at::zeros_like(byte), byte);
  return {byte.to(at::kByte), zero};
}

std::pair<at::Tensor, double> encode_mxfp4_scales(const at::Tensor& scales, const at::Tensor& codes,
                                                  int64_t block_size) {
  const at::Tensor e = scales.to(at::kInt).sub(127);
  const at::Tensor nonzero =
      at::bitwise_and(codes, 7).ne(0).reshape({codes.size(0), -1, block_size}).any(-1);
  int64_t c = 126;
  if (nonzero.any().item<bool>()) {
    const int64_t e_min = at::where(nonzero, e, at::full_like(e, 1 << 20)).min().item<int64_t>();
    const int64_t e_max = at::where(nonzero, e, at::full_like(e, -(1 << 20))).max().item<int64_t>();
    TORCH_CHECK_VALUE(e_max - e_min <= 126, "scales: mxfp4 block exponents span ", e_max - e_min,
                      " binades; the tiled layout represents at most 126 (use fp4_linear)");
    c = std::clamp<int64_t>(126, 1 - e_min, 127 - e_max);
  }
  const at::Tensor byte = at::clamp(e.add(c), 1, 127).to(at::kByte);
  return {byte, std::ldexp(1.0, static_cast<int>(126 - c))};
}

namespace {

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// [rows, cols] -> [rows_to, cols_to] padded with `fill`.
at::Tensor pad_to(const at::Tensor& t, int64_t rows_to, int64_t cols_to, double fill) {
  at::Tensor out = at::full({rows_to, cols_to}, fill, t.options());
  out.narrow(0, 0, t.size(0)).narrow(1, 0, t.size(1)).copy_(t);
  return out;
}

// Per-block scale values [NT*16, S*bps] (bps blocks per step) <-> the tiled entries
// [NT, S, 8 * tb, 2 * bps / tb] (fp4_tiled_layout.h): entry tb * g + (t >> 1) for nvfp4 (tb = 2: lanes
// t >> 1 = 0 and 1 use different blocks), g for mxfp4 and nf4 (tb = 1); within an entry [row half h]
// [the lane's blocks of the step, in column order].
at::Tensor scales_to_entries(const at::Tensor& s, int64_t nt, int64_t steps, int64_t bps, int64_t tb) {
  at::Tensor v = s.reshape({nt, 2, 8, steps, bps / tb, tb});  // [NT, h, g, S, jb, tb]
  v = v.permute({0, 3, 2, 5, 1, 4});                          // [NT, S, g, tb, h, jb]
  return v.reshape({nt, steps, 8 * tb, 2 * bps / tb}).contiguous();
}
at::Tensor entries_to_scales(const at::Tensor& e, int64_t nt, int64_t steps, int64_t bps, int64_t tb) {
  at::Tensor v = e.reshape({nt, steps, 8, tb, 2, bps / tb});  // [NT, S, g, tb, h, jb]
  v = v.permute({0, 4, 2, 1, 5, 3});                          // [NT, h, g, S, jb, tb]
  return v.reshape({nt * kTileRows, steps * bps});
}

// Blocks per step and tb (above) of a format's tiled scales, from the format's block size and the
// layout's entry counts (fp4_tiled_layout.h).
constexpr std::pair<int64_t, int64_t> entry_shape(Format f) {
  return {kStepCols / block_size_of(f), scale_entries_per_step(static_cast<int>(f)) / 8};
}
static_assert(scale_entry_elems(0) == 2 * entry_shape(Format::NVFP4).first / entry_shape(Format::NVFP4).second &&
                  scale_entry_elems(1) == 2 * entry_shape(Format::MXFP4).first / entry_shape(Format::MXFP4).second &&
                  scale_entry_elems(2) == 2 * entry_shape(Format::NF4).first / entry_shape(Format::NF4).second,
              "fp4_tiled_layout.h's entry sizes disagree with the formats' block sizes");

std::tuple<at::Tensor, at::Tensor, at::Tensor> fp4_tile(const at::Tensor& packed_in, const at::Tensor& scales_in,
                                                        const at::Tensor& tensor_scale, const std::string& fmt,
                                                        int64_t block_size) {
  const Format f = parse_format(fmt);
  check_block_size(f, fmt, block_size);
  const int64_t kp = check_packed_weight(packed_in, scales_in, tensor_scale, f, block_size);
  const int64_t n = packed_in.size(0);
  TORCH_CHECK_VALUE(n > 0, "packed: expected at least one row");
  const int64_t nt = ceil_div(n, kTileRows), steps = ceil_div(kp, kStepCols);
  const int64_t rows = nt * kTileRows, cols = steps * kStepCols;
  const at::Tensor scales = scales_in.contiguous();
  at::Tensor codes = unpack_codes(packed_in.contiguous());  // [N, Kp]

  at::Tensor block_scales, out_scale;
  if (f == Format::NVFP4) {
    auto [byte, zero] = encode_nvfp4_scales(scales);
    codes = codes.masked_fill(zero.repeat_interleave(block_size, 1), 0);
    block_scales = pad_to(byte, rows, cols / block_size, 0);
    out_scale = tensor_scale.reshape({}).to(at::kFloat).mul(static_cast<float>(std::ldexp(1.0, 126 - kNvfp4Shift)));
  } else if (f == Format::MXFP4) {
    auto [byte, factor] = encode_mxfp4_scales(scales, codes, block_size);
    block_scales = pad_to(byte, rows, cols / block_size, 1);
    out_scale = at::full({}, factor, tensor_scale.options().dtype(at::kFloat));
  } else {
    block_scales = pad_to(scales, rows, cols / block_size, 0);
    out_scale = at::ones({}, tensor_scale.options().dtype(at::kFloat));
  }
  const auto [bps, tb] = entry_shape(f);
  const at::Tensor tile_scales = scales_to_entries(block_scales, nt, steps, bps, tb);

  // Codes -> [NT, S, jb, g, t, jw, h, q, e]: column 128 s + 32 (j >> 1) + 8 t + 4 (j & 1) + 2 q + e
  // with j = 4 jb + jw, i.e. 128 s + 64 jb + 32 (jw >> 1) + 8 t + 4 (jw & 1) + 2 q + e.
  codes = pad_to(codes, rows, cols, zero_code(f)).reshape({nt, 2, 8, steps, 2, 2, 4, 2, 2, 2});
  codes = codes.permute({0, 3, 4, 2, 6, 5, 7, 1, 8, 9}).reshape({nt, steps, 2, 8, 4, 4, 2, 2, 2}).to(at::kLong);
  at::Tensor word = at::zeros(codes.sizes().slice(0, 6), codes.options());
  for (int h = 0; h < 2; ++h) {
    for (int q = 0; q < 2; ++q) {
      const int p = h + 2 * q;
      for (int e = 0; e < 2; ++e) {
        const at::Tensor c = codes.select(8, e).select(7, q).select(6, h);
        if (f == Format::NF4) {
          word.bitwise_or_(at::bitwise_left_shift(c, 4 * (2 * p + e)));
          continue;
        }
        for (int b = 0; b < 4; ++b) {
          const at::Tensor bit = at::bitwise_and(at::bitwise_right_shift(c, b), 1);
          word.bitwise_or_(at::bitwise_left_shift(bit, stored_bit(p, e, b)));
        }
      }
    }
  }
  // Words as little-endian bytes: [NT, S, 1024] (two's complement, so the int32 cast is exact).
  word = at::where(word.ge(int64_t{1} << 31), word.sub(int64_t{1} << 32), word);
  const at::Tensor tiles = word.to(at::kInt).contiguous().view(at::kByte).reshape({nt, steps, kStepBytes});
  return {tiles, tile_scales, out_scale};
}

at::Tensor e2m1_values(const at::Tensor& codes) {
  static const float kValues[16] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f,
                                    -0.0f, -0.5f, -1.0f, -1.5f, -2.0f, -3.0f, -4.0f, -6.0f};
  const at::Tensor table = at::tensor(at::ArrayRef<float>(kValues, 16)).to(codes.device());
  return table.index({codes});
}

// The codes of a tiled weight as [NT*16, S*128] int64 (padding included): the inverse of fp4_tile's
// bit placement and word order.
at::Tensor tiled_codes(const at::Tensor& tiles, Format f) {
  const int64_t nt = tiles.size(0), steps = tiles.size(1);
  const at::Tensor word = tiles.contiguous().view(at::kInt).to(at::kLong).reshape({nt, steps, 2, 8, 4, 4});
  at::Tensor codes = at::zeros({nt, steps, 2, 8, 4, 4, 2, 2, 2}, word.options());  // [..., h, q, e]
  for (int h = 0; h < 2; ++h) {
    for (int q = 0; q < 2; ++q) {
      const int p = h + 2 * q;
      for (int e = 0; e < 2; ++e) {
        at::Tensor c = codes.select(8, e).select(7, q).select(6, h);
        if (f == Format::NF4) {
          c.copy_(at::bitwise_and(at::bitwise_right_shift(word, 4 * (2 * p + e)), 15));
          continue;
        }
        for (int b = 0; b < 4; ++b) {
          const at::Tensor bit = at::bitwise_and(at::bitwise_right_shift(word, stored_bit(p, e, b)), 1);
          c.bitwise_or_(at::bitwise_left_shift(bit, b));
        }
      }
    }
  }
  // [NT, S, jb, g, t, jwh, jwl, h, q, e] -> [NT, h, g, S, jb, jwh, t, jwl, q, e] = [rows, cols].
  codes = codes.reshape({nt, steps, 2, 8, 4, 2, 2, 2, 2, 2}).permute({0, 7, 3, 1, 2, 5, 4, 6, 8, 9});
  return codes.reshape({nt * kTileRows, steps * kStepCols});
}

// The stored per-block scale entries of a tiled weight as [NT*16, S*bps] (padding included).
at::Tensor tiled_block_entries(const at::Tensor& lane_scales, Format f) {
  const auto [bps, tb] = entry_shape(f);
  return entries_to_scales(lane_scales, lane_scales.size(0), lane_scales.size(1), bps, tb);
}

// nvfp4's block scales (without the tensor scale) from their tiled bytes (E + 9) << 3 | m:
// 2^E * (1 + m / 8), exactly the E4M3 value stored in the canonical scales (subnormals included).
at::Tensor nvfp4_block_scales(const at::Tensor& block) {
  const at::Tensor byte = block.to(at::kInt);
  const at::Tensor e = at::bitwise_right_shift(byte, 3).add(kNvfp4MinExp);
  const at::Tensor m = at::bitwise_and(byte, 7).to(at::kFloat);
  return at::ldexp(m.div(8).add(1), e);
}

// The float32 weight [n, k] that a tiled weight multiplies by (exactly fp4_dequantize's values).
at::Tensor fp4_untile(const at::Tensor& tiles, const at::Tensor& lane_scales, const at::Tensor& out_scale,
                      const std::string& fmt, int64_t n, int64_t k) {
  const Format f = check_tiled_weight(tiles, lane_scales, out_scale, fmt, n, k);
  const at::Tensor codes = tiled_codes(tiles, f);
  // Per-column scale values [rows, cols] from the entries.
  const at::Tensor block = tiled_block_entries(lane_scales, f);  // [rows, steps * bps]
  at::Tensor s;
  if (f == Format::NVFP4) {
    s = nvfp4_block_scales(block).mul(out_scale.to(lane_scales.device()).mul(std::ldexp(1.0, kNvfp4Shift - 126)));
  } else if (f == Format::MXFP4) {
    const at::Tensor byte = block.to(at::kInt);
    s = at::ldexp(at::ones_like(byte, at::kFloat), byte.sub(126)).mul(out_scale.to(lane_scales.device()));
  } else {
    s = block;
  }
  s = s.repeat_interleave(kStepCols / entry_shape(f).first, 1);

  at::Tensor values;
  if (f == Format::NF4) {
    const at::Tensor table = at::tensor(at::ArrayRef<float>(kNF4, 16)).to(codes.device());
    values = table.index({codes}).mul(s);
  } else {
    values = e2m1_values(codes).mul(s);
  }
  return values.narrow(0, 0, n).narrow(1, 0, k).contiguous();
}

// The canonical tensors (docs/contract.md §3) of a tiled weight of n rows and k columns: packed
// uint8 [n, Kp/2], scales [n, Kp/block] and tensor_scale float32 [], Kp the next multiple of the
// block size. fp4_tile's inverse: bit for bit for weights as fp4_quantize makes them. Where the
// layout forgets bits it gives the canonical encoding of the same values: a block whose codes are
// all zero gets scale 0 (nvfp4, where fp4_tile zeroes the codes of scale-0 blocks, and mxfp4,
// where it clamps such a block's exponent).
std::tuple<at::Tensor, at::Tensor, at::Tensor> fp4_untile_packed(const at::Tensor& tiles,
                                                                 const at::Tensor& lane_scales,
                                                                 const at::Tensor& out_scale, const std::string& fmt,
                                                                 int64_t n, int64_t k) {
  const Format f = check_tiled_weight(tiles, lane_scales, out_scale, fmt, n, k);
  const int64_t bs = block_size_of(f), kp = ceil_div(k, bs) * bs;
  const at::Tensor codes = tiled_codes(tiles, f).narrow(0, 0, n).narrow(1, 0, kp);
  const at::Tensor pairs = codes.reshape({n, kp / 2, 2});
  const at::Tensor packed = at::bitwise_or(pairs.select(2, 0), at::bitwise_left_shift(pairs.select(2, 1), 4))
                                .to(at::kByte).contiguous();
  const at::Tensor block = tiled_block_entries(lane_scales, f).narrow(0, 0, n).narrow(1, 0, kp / bs);
  // E2M1 blocks whose codes all have magnitude 0 [n, Kp/block]
  const auto all_zero = [&] { return at::bitwise_and(codes, 7).eq(0).reshape({n, kp / bs, bs}).all(-1); };
  const at::Tensor one = at::ones({}, out_scale.options());
  if (f == Format::NVFP4) {
    at::Tensor s = nvfp4_block_scales(block);
    s = at::where(all_zero().logical_and(block.eq(0)), at::zeros_like(s), s);
    const at::Tensor ts = out_scale.reshape({}).mul(std::ldexp(1.0, kNvfp4Shift - 126));
    return {packed, s.to(at::kFloat8_e4m3fn).contiguous(), ts};
  }
  if (f == Format::MXFP4) {
    // out_scale = 2^(126 - c) for fp4_tile's exponent offset c: stored byte = e + c.
    const int c = 126 - std::ilogb(out_scale.item<float>());
    at::Tensor stored = block.to(at::kInt).sub(c).add(static_cast<int64_t>(kMxfp4ExpBias));
    stored = at::where(all_zero(), at::zeros_like(stored), stored);
    return {packed, stored.to(at::kByte).contiguous(), one};
  }
  return {packed, block.contiguous(), one};
}

// x @ untile(...).T + bias in float32 (gelu if asked; x RMS-normalised first with rms_eps and
// rms_sumsq, the residual added last), cast to x's dtype: the CPU kernel of fp4_linear_tiled (the
// CUDA one is fp4_gemv_cuda.cu).
at::Tensor fp4_linear_tiled_cpu(const at::Tensor& x, const at::Tensor& tiles, const at::Tensor& lane_scales,
                                const at::Tensor& out_scale, const c10::optional<at::Tensor>& bias,
                                const std::string& fmt, int64_t n, int64_t k, bool gelu,
                                c10::optional<double> rms_eps, const c10::optional<at::Tensor>& residual,
                                const c10::optional<at::Tensor>& rms_sumsq) {
  check_tiled_weight(tiles, lane_scales, out_scale, fmt, n, k);
  check_tiled_linear_args(x, tiles, bias, n, k, rms_eps, residual, n, rms_sumsq);
  const at::Tensor w = fp4_untile(tiles, lane_scales, out_scale, fmt, n, k);
  at::Tensor y =
      at::matmul(rms_eps.has_value() ? rms_normalized(x, *rms_eps, rms_sumsq) : x.to(at::kFloat), w.t());
  if (bias.has_value()) y = y.add(bias->to(at::kFloat));
  if (gelu) y = at::gelu(y);
  if (residual.has_value()) y = y.add(residual->to(at::kFloat));
  return y.to(x.scalar_type());
}

// fp4_linear_tiled_cpu and the sums of squares of its output: the CPU kernel of
// fp4_linear_tiled_sumsq.
std::tuple<at::Tensor, at::Tensor> fp4_linear_tiled_sumsq_cpu(
    const at::Tensor& x, const at::Tensor& tiles, const at::Tensor& lane_scales, const at::Tensor& out_scale,
    const c10::optional<at::Tensor>& bias, const std::string& fmt, int64_t n, int64_t k, bool gelu,
    c10::optional<double> rms_eps, const c10::optional<at::Tensor>& residual,
    const c10::optional<at::Tensor>& rms_sumsq) {
  at::Tensor y = fp4_linear_tiled_cpu(x, tiles, lane_scales, out_scale, bias, fmt, n, k, gelu, rms_eps, residual,
                                      rms_sumsq);
  at::Tensor sumsq = sumsq_parts(y);
  return {y, sumsq};
}

// swiglu_of_tiled_rows(x @ untile(...).T) in float32 (x RMS-normalised first with rms_eps and
// rms_sumsq), cast to x's dtype: the CPU kernel of fp4_linear_tiled_swiglu.
at::Tensor fp4_linear_tiled_swiglu_cpu(const at::Tensor& x, const at::Tensor& tiles, const at::Tensor& lane_scales,
                                       const at::Tensor& out_scale, const c10::optional<at::Tensor>& bias,
                                       const std::string& fmt, int64_t n, int64_t k, c10::optional<double> rms_eps,
                                       const c10::optional<at::Tensor>& rms_sumsq) {
  check_tiled_weight(tiles, lane_scales, out_scale, fmt, n, k);
  check_tiled_linear_args(x, tiles, bias, n, k, rms_eps, c10::nullopt, 0, rms_sumsq);
  check_swiglu_rows(n);
  const at::Tensor w = fp4_untile(tiles, lane_scales, out_scale, fmt, n, k);
  const at::Tensor xf = rms_eps.has_value() ? rms_normalized(x, *rms_eps, rms_sumsq) : x.to(at::kFloat);
  return swiglu_of_tiled_rows(at::matmul(xf, w.t()), bias).to(x.scalar_type());
}

}  // namespace

Format check_tiled_weight(const at::Tensor& tiles, const at::Tensor& tile_scales, const at::Tensor& out_scale,
                          const std::string& fmt, int64_t n, int64_t k) {
  const Format f = parse_format(fmt);
  TORCH_CHECK_TYPE(tiles.scalar_type() == at::kByte, "tiles: expected uint8, got ", tiles.scalar_type());
  TORCH_CHECK_VALUE(tiles.dim() == 3 && tiles.size(2) == kStepBytes, "tiles: expected [tiles, steps, ",
                    kStepBytes, "] (made by fp4_tile), got ", tiles.sizes());
  const int64_t nt = tiles.size(0), steps = tiles.size(1);
  TORCH_CHECK_VALUE(n > 0 && ceil_div(n, kTileRows) == nt, "n: ", n, " rows do not match ", nt, " tiles of ",
                    kTileRows, " rows");
  // Every block size divides kStepCols, so the padded K takes as many steps as the logical K.
  TORCH_CHECK_VALUE(k > 0 && ceil_div(k, kStepCols) == steps, "k: ", k, " columns do not match ", steps,
                    " steps of ", kStepCols, " columns");
  const auto scale_type = f == Format::NF4 ? at::kFloat : at::kByte;
  const int64_t entries = scale_entries_per_step(static_cast<int>(f)), per_entry = scale_entry_elems(static_cast<int>(f));
  TORCH_CHECK_TYPE(tile_scales.scalar_type() == scale_type, "tile_scales: expected ", scale_type, " for ", fmt,
                   ", got ", tile_scales.scalar_type());
  TORCH_CHECK_VALUE(tile_scales.sizes() == at::IntArrayRef({nt, steps, entries, per_entry}), "tile_scales: expected [",
                    nt, ", ", steps, ", ", entries, ", ", per_entry, "], got ", tile_scales.sizes());
  TORCH_CHECK_TYPE(out_scale.scalar_type() == at::kFloat, "out_scale: expected float32, got ",
                   out_scale.scalar_type());
  TORCH_CHECK_VALUE(out_scale.numel() == 1, "out_scale: expected one element, got ", out_scale.numel());
  TORCH_CHECK_VALUE(tile_scales.device() == tiles.device() && out_scale.device() == tiles.device(),
                    "tile_scales and out_scale must be on tiles' device ", tiles.device(), ", got ",
                    tile_scales.device(), " and ", out_scale.device());
  return f;
}

void check_tiled_linear_args(const at::Tensor& x, const at::Tensor& tiles, const c10::optional<at::Tensor>& bias,
                             int64_t n, int64_t k, c10::optional<double> rms_eps,
                             const c10::optional<at::Tensor>& residual, int64_t n_out,
                             const c10::optional<at::Tensor>& rms_sumsq) {
  check_float_input(x, "x");
  TORCH_CHECK_VALUE(x.dim() >= 1 && x.size(-1) == k, "x: expected [..., ", k, "], got shape ", x.sizes());
  TORCH_CHECK_VALUE(x.device() == tiles.device(), "x: expected device ", tiles.device(), ", got ", x.device());
  if (bias.has_value()) {
    check_float_input(*bias, "bias");
    TORCH_CHECK_VALUE(bias->dim() == 1 && bias->size(0) == n, "bias: expected shape [", n, "], got ",
                      bias->sizes());
    TORCH_CHECK_VALUE(bias->device() == tiles.device(), "bias: expected device ", tiles.device(), ", got ",
                      bias->device());
  }
  if (rms_eps.has_value()) {
    TORCH_CHECK_VALUE(std::isfinite(*rms_eps) && *rms_eps >= 0.0, "rms_eps: expected a finite value >= 0, got ",
                      *rms_eps);
  }
  if (residual.has_value()) {
    TORCH_CHECK_VALUE(n_out > 0, "residual: not taken by this op");
    TORCH_CHECK_TYPE(residual->scalar_type() == x.scalar_type(), "residual: expected x's dtype ", x.scalar_type(),
                     ", got ", residual->scalar_type());
    auto want = x.sizes().vec();
    want.back() = n_out;
    TORCH_CHECK_VALUE(residual->sizes() == at::IntArrayRef(want), "residual: expected shape ", at::IntArrayRef(want),
                      ", got ", residual->sizes());
    TORCH_CHECK_VALUE(residual->device() == x.device(), "residual: expected x's device ", x.device(), ", got ",
                      residual->device());
  }
  if (rms_sumsq.has_value()) {
    TORCH_CHECK_VALUE(rms_eps.has_value(), "rms_sumsq: taken only with rms_eps (the norm it feeds)");
    TORCH_CHECK_TYPE(rms_sumsq->scalar_type() == at::kFloat, "rms_sumsq: expected float32, got ",
                     rms_sumsq->scalar_type());
    const auto lead = x.sizes().slice(0, x.dim() - 1);
    TORCH_CHECK_VALUE(rms_sumsq->dim() == x.dim() && rms_sumsq->sizes().slice(0, x.dim() - 1) == lead &&
                          rms_sumsq->size(-1) >= 1,
                      "rms_sumsq: expected [", lead, ", P] with P >= 1 (x's leading dimensions), got ",
                      rms_sumsq->sizes());
    TORCH_CHECK_VALUE(rms_sumsq->device() == x.device(), "rms_sumsq: expected x's device ", x.device(), ", got ",
                      rms_sumsq->device());
  }
}

at::Tensor rms_normalized(const at::Tensor& x, double eps, const c10::optional<at::Tensor>& rms_sumsq) {
  if (!rms_sumsq.has_value()) return at::rms_norm(x.to(at::kFloat), {x.size(-1)}, /*weight=*/c10::nullopt, eps);
  const at::Tensor mean = rms_sumsq->sum(-1, /*keepdim=*/true).div(static_cast<double>(x.size(-1)));
  return x.to(at::kFloat).mul(mean.add(eps).rsqrt());
}

at::Tensor sumsq_parts(const at::Tensor& y) {
  const int64_t n = y.size(-1), parts = ceil_div(n, kSumsqGroup);
  const at::Tensor yf = at::constant_pad_nd(y.to(at::kFloat), {0, parts * kSumsqGroup - n});
  auto sizes = y.sizes().vec();
  sizes.back() = parts;
  sizes.push_back(kSumsqGroup);
  return yf.square().reshape(sizes).sum(-1);
}

void check_swiglu_rows(int64_t n) {
  TORCH_CHECK_VALUE(n % (2 * 8) == 0, "n: fp4_linear_tiled_swiglu takes gate and up rows in whole tiles (8 of each): "
                    "expected a multiple of 16, got ", n);
}

at::Tensor swiglu_of_tiled_rows(const at::Tensor& y, const c10::optional<at::Tensor>& bias) {
  const int64_t n = y.size(-1), half = n / 2;
  const at::Tensor pairs = y.to(at::kFloat).reshape({-1, n / 16, 2, 8});
  at::Tensor gate = pairs.select(2, 0).reshape({-1, half}), up = pairs.select(2, 1).reshape({-1, half});
  if (bias.has_value()) {
    const at::Tensor b = bias->to(at::kFloat);
    gate = gate.add(b.narrow(0, 0, half));
    up = up.add(b.narrow(0, half, half));
  }
  auto sizes = y.sizes().vec();
  sizes.back() = half;
  return at::silu(gate).mul(up).view(sizes);
}

TORCH_LIBRARY_IMPL(apt, CompositeExplicitAutograd, m) {
  m.impl("fp4_tile", &fp4_tile);
  m.impl("fp4_untile", &fp4_untile);
  m.impl("fp4_untile_packed", &fp4_untile_packed);
}

TORCH_LIBRARY_IMPL(apt, CPU, m) {
  m.impl("fp4_linear_tiled", &fp4_linear_tiled_cpu);
  m.impl("fp4_linear_tiled_sumsq", &fp4_linear_tiled_sumsq_cpu);
  m.impl("fp4_linear_tiled_swiglu", &fp4_linear_tiled_swiglu_cpu);
}

}  // namespace apt::fp4
