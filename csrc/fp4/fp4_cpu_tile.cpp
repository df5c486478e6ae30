// apt::fp4_cpu_tile (canonical packed weight -> the CPU tiled layout of fp4_cpu_tiled_layout.h)
// and apt::fp4_linear_cpu_tiled (fp4_linear on that layout: the AVX-512 GEMV for few rows of x).
#include <ATen/ops/empty.h>
#include <ATen/ops/ones.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <string>
#include <tuple>

#include "aligned_vector.h"
#include "fp4/fp4_cpu_kernels.h"
#include "fp4/fp4_cpu_pieces.h"
#include "fp4/fp4_cpu_tiled_layout.h"
#include "fp4/fp4_tile_scales.h"

namespace apt::fp4 {

using namespace apt::fp4::cpu_tiled;

namespace {

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

constexpr int64_t kTilesPiece = 4;  // tiles (64 weight rows) per work piece the threads claim

// [n, cols] -> [ceil(n/16), cols, 16] with rows past n zero: row 16t + r goes to [t, :, r].
at::Tensor tile_rows(const at::Tensor& t) {
  const int64_t n = t.size(0), nt = ceil_div(n, kTileRows);
  at::Tensor padded = at::zeros({nt * kTileRows, t.size(1)}, t.options());
  padded.narrow(0, 0, n).copy_(t);
  return padded.view({nt, kTileRows, t.size(1)}).transpose(1, 2).contiguous();
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> fp4_cpu_tile(const at::Tensor& packed, const at::Tensor& scales,
                                                            const at::Tensor& tensor_scale, const std::string& fmt,
                                                            int64_t block_size) {
  const PackedWeightArgs args = check_cpu_tile_args(packed, scales, tensor_scale, fmt, block_size);
  const Format f = args.format;
  at::Tensor codes = packed.contiguous(), s;
  at::Tensor out_scale = at::ones({}, tensor_scale.options().dtype(at::kFloat));
  if (f == Format::NVFP4) {
    auto [byte, zero] = encode_nvfp4_scales(scales.contiguous());
    codes = codes.masked_fill(zero.repeat_interleave(block_size / 2, 1), 0);  // their byte reads as 2^-9
    s = byte;
    out_scale = tensor_scale.reshape({}).to(at::kFloat).clone();
  } else if (f == Format::MXFP4) {
    auto [byte, factor] = encode_mxfp4_scales(scales.contiguous(), unpack_codes(codes), block_size);
    s = byte;
    out_scale.fill_(factor);  // 2^(126 - c)
  } else {
    s = scales;
  }
  // Rows as 32-bit words (kp / 2 bytes, a multiple of 8): [n, kp / 8] int32, tiled, back to bytes.
  const at::Tensor tiles = tile_rows(codes.view(at::kInt)).view(at::kByte);  // [tiles, kp / 8, 64]
  return {tiles, tile_rows(s), out_scale};
}

at::Tensor fp4_linear_cpu_tiled(const at::Tensor& x, const at::Tensor& tiles, const at::Tensor& tile_scales,
                                const at::Tensor& out_scale, const c10::optional<at::Tensor>& bias,
                                const std::string& fmt, int64_t n, int64_t k) {
  const PackedWeightArgs args = check_cpu_tiled_linear_args(x, tiles, tile_scales, out_scale, bias, fmt, n, k);
  const Format f = args.format;
  const int64_t kp = args.k_padded, block = block_size_of(f), nt = tiles.size(0);
  const CpuKernels kern = cpu_kernels();
  const at::Tensor xf = (x.scalar_type() == at::kFloat ? x : x.to(at::kFloat)).contiguous();
  const int64_t m = xf.numel() / k;
  // x zero-padded to kp columns on cache-line boundaries (the kernels broadcast single columns).
  AlignedVector<float> xp(static_cast<size_t>(m * kp), 0.0f);
  const float* xs = xf.const_data_ptr<float>();
  for (int64_t i = 0; i < m; ++i) std::copy_n(xs + i * k, k, xp.data() + i * kp);
  const at::Tensor tl = tiles.contiguous(), ts = tile_scales.contiguous();
  const auto* words = reinterpret_cast<const uint32_t*>(tl.const_data_ptr<uint8_t>());
  const auto* scale_bytes = static_cast<const uint8_t*>(ts.const_data_ptr());
  const int64_t scale_stride = (kp / block) * kTileRows * static_cast<int64_t>(ts.element_size());
  const float os = *out_scale.const_data_ptr<float>();

  auto sizes = x.sizes().vec();
  sizes.back() = n;
  at::Tensor out = at::empty(sizes, xf.options());
  float* op = out.mutable_data_ptr<float>();
  if (m > 0) {
    Pieces pieces(nt, kTilesPiece);
    pieces.run([&](int64_t lane) {
      std::array<float, kMaxRows * kTileRows> res{};
      for (int64_t t0, t1; pieces.claim(lane, t0, t1);)
        for (int64_t t = t0; t < t1; ++t) {
          const TiledSlice slice{words + t * (kp / kWordCodes) * kTileRows, scale_bytes + t * scale_stride, kp, block,
                                 code_lut(f)};
          const int64_t rows = std::min(kTileRows, n - t * kTileRows);
          for (int64_t m0 = 0; m0 < m; m0 += kMaxRows) {
            const int64_t mr = std::min(kMaxRows, m - m0);
            kern.tiled_dot(slice, xp.data() + m0 * kp, kp, mr, res.data(), kTileRows);
            for (int64_t i = 0; i < mr; ++i)
              for (int64_t r = 0; r < rows; ++r) op[(m0 + i) * n + t * kTileRows + r] = res[i * kTileRows + r] * os;
          }
        }
    });
  }
  if (bias.has_value()) out.add_(bias->to(at::kFloat));
  return x.scalar_type() == at::kFloat ? out : out.to(x.scalar_type());
}

}  // namespace

PackedWeightArgs check_cpu_tile_args(const at::Tensor& packed, const at::Tensor& scales,
                                     const at::Tensor& tensor_scale, const std::string& fmt, int64_t block_size) {
  const Format f = parse_format(fmt);
  check_block_size(f, fmt, block_size);
  const int64_t kp = check_packed_weight(packed, scales, tensor_scale, f, block_size);
  TORCH_CHECK_VALUE(packed.device().is_cpu(), "packed: the CPU tiled layout is made from CPU tensors, got device ",
                    packed.device());
  return {f, kp};
}

PackedWeightArgs check_cpu_tiled_linear_args(const at::Tensor& x, const at::Tensor& tiles,
                                             const at::Tensor& tile_scales, const at::Tensor& out_scale,
                                             const c10::optional<at::Tensor>& bias, const std::string& fmt,
                                             int64_t n, int64_t k) {
  const Format f = parse_format(fmt);
  TORCH_CHECK_VALUE(n > 0, "n: expected a positive number of weight rows, got ", n);
  TORCH_CHECK_VALUE(k > 0, "k: expected a positive number of weight columns, got ", k);
  const int64_t block = block_size_of(f), kp = ceil_div(k, block) * block, nt = ceil_div(n, kTileRows);
  TORCH_CHECK_TYPE(tiles.scalar_type() == at::kByte, "tiles: expected uint8, got ", tiles.scalar_type());
  TORCH_CHECK_VALUE(tiles.sizes() == at::IntArrayRef({nt, kp / kWordCodes, kTileWordBytes}), "tiles: expected [",
                    nt, ", ", kp / kWordCodes, ", ", kTileWordBytes, "] for n = ", n, ", k = ", k, " (made by fp4_cpu_tile), got ",
                    tiles.sizes());
  const auto scale_type = f == Format::NF4 ? at::kFloat : at::kByte;
  TORCH_CHECK_TYPE(tile_scales.scalar_type() == scale_type, "tile_scales: expected ", scale_type, " for ", fmt,
                   ", got ", tile_scales.scalar_type());
  TORCH_CHECK_VALUE(tile_scales.sizes() == at::IntArrayRef({nt, kp / block, kTileRows}), "tile_scales: expected [",
                    nt, ", ", kp / block, ", ", kTileRows, "], got ", tile_scales.sizes());
  TORCH_CHECK_TYPE(out_scale.scalar_type() == at::kFloat, "out_scale: expected float32, got ",
                   out_scale.scalar_type());
  TORCH_CHECK_VALUE(out_scale.numel() == 1, "out_scale: expected one element, got ", out_scale.numel());
  for (const auto& [t, name] : {std::pair<const at::Tensor&, const char*>{tiles, "tiles"}, {tile_scales, "tile_scales"},
                                {out_scale, "out_scale"}})
    TORCH_CHECK_VALUE(t.device().is_cpu(), name, ": expected a CPU tensor (the CPU tiled layout), got device ",
                      t.device());
  check_tiled_linear_args(x, tiles, bias, n, k);
  return {f, kp};
}

TORCH_LIBRARY_IMPL(apt, CPU, m) {
  m.impl("fp4_cpu_tile", &fp4_cpu_tile);
  m.impl("fp4_linear_cpu_tiled", &fp4_linear_cpu_tiled);
}

}  // namespace apt::fp4
