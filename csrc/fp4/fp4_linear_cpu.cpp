// CPU kernel of apt::fp4_linear: y = x @ dequantize(W).T + bias with fp32 accumulation, without
// ever materialising the whole dequantised weight. Two paths by the number M of x rows:
//  - M < kGemm4MinRows (decoding, GEMV): each weight row is decoded in registers (LUT, scaled
//    once per block) and dotted with the M rows of x.
//  - M >= kGemm4MinRows (batches): each thread takes groups of 4 output features,
//    decodes the 4 weight rows slice by slice (kSliceK columns) into a thread-local float32
//    buffer that stays in L1, and runs a register-blocked 4 x MT micro-kernel over the M
//    rows, in chunks of kGemm4MaxRows rows of x (the weight is decoded once per chunk).
//    Decoding a tile of weight rows and calling at::mm was measured 5-10x slower here (MKL
//    sgemm on these skinny tile shapes on the AMD EPYC test machine), so there is no BLAS
//    path; see docs/fp4.md.
//  - bfloat16 x with at least kBf16GemmMinRows rows, on the AVX-512 path of a CPU with bfloat16
//    matrix hardware (AMX-BF16 or AVX512-BF16): slabs of kBf16SlabRows weight rows are decoded
//    to bfloat16 (each value rounded once) into a buffer that stays in cache, and torch's bf16
//    GEMM (oneDNN, fp32 accumulation) multiplies x by each slab. The weights' rounding to
//    bfloat16 (relative 2^-9) is the one difference from the float32 paths.
// The row kernels (fp4_cpu_kernels*.cpp) are picked for the CPU's best ISA at run time.
#include <ATen/cpu/Utils.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/mm.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <string>
#include <vector>

#include "aligned_vector.h"
#include "fp4/fp4_cpu_kernels.h"
#include "fp4/fp4_cpu_pieces.h"

namespace apt::fp4 {
namespace {

constexpr int64_t kGemm4MinRows = kMaxFusedRows + 1;
constexpr int64_t kGemm4MaxRows = 64;
constexpr int64_t kSliceK = 1024;  // a multiple of every block size and of 64
static_assert(kSliceK % 64 == 0, "slices must start on block and k-order chunk boundaries");
constexpr int64_t kBf16GemmMinRows = 32;  // hand-timed crossover on the Xeon (AMX), 4096 x 4096, 2 threads: the tiled GEMV wins at 24 rows (6.87 against 7.15 ms), the GEMM at 32 (7.68 against 8.99)
constexpr int64_t kBf16SlabRows = 1024;
// Work pieces the threads claim: weight rows of the GEMV path, 4-row groups of the batched one.
constexpr int64_t kDotRowsPiece = 64;
constexpr int64_t kGemm4Piece = 8;

struct Weight {
  const uint8_t* packed;
  const at::Tensor& scales;
  float ts;
  Format f;
  int64_t n, kp, block;

  // Room for one row's decode scales as the kernels read them (PackedRow::scales): zeros past
  // the row's kp / block.
  std::vector<float> scale_buffer(const CpuKernels& kern, int64_t rows = 1) const {
    return std::vector<float>(static_cast<size_t>(rows * kern.row_len(kp) / block), 0.0f);
  }

  PackedRow row(const CpuKernels& kern, int64_t r, float* row_scales) const {
    row_decode_scales(kern, scales, ts, f, r, row_scales);
    return {packed + r * (kp / 2), row_scales, kp, block, code_lut(f)};
  }
};

using AlignedFloats = AlignedVector<float>;  // the kernels' 64-byte loads stay within one cache line

// x [M, K] float32 (contiguous) -> [M, kern.row_len(kp)] float32 in the kernels' k order,
// zero-padded (a plain loop: a strided ATen copy of this permutation costs more than a small
// layer). Empty when x is usable as it is (natural order, K = len).
AlignedFloats linear_order_x(const CpuKernels& kern, const float* x, int64_t m, int64_t k, int64_t kp) {
  const int64_t len = kern.row_len(kp), chunk = chunk_of(kern.order);
  if (kern.order == KOrder::kNatural && k == len) return {};
  AlignedFloats out(static_cast<size_t>(m * len));
  std::vector<int64_t> element(static_cast<size_t>(chunk));
  for (int64_t q = 0; q < chunk; ++q) element[q] = element_at(kern.order, q);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t c0 = 0; c0 < len; c0 += chunk)
      for (int64_t q = 0; q < chunk; ++q) {
        const int64_t e = c0 + element[q];
        out[i * len + c0 + q] = e < k ? x[i * k + e] : 0.0f;
      }
  return out;
}

// out [M, N] float32 = x W^T (x [M, len] in the kernels' k order), decoding each weight row
// in registers.
void linear_dot_rows(const CpuKernels& kern, const float* x, int64_t m, const Weight& w, float* out) {
  Pieces rows(w.n, kDotRowsPiece);
  rows.run([&](int64_t lane) {
    std::vector<float> row_scales = w.scale_buffer(kern);
    std::array<float, kMaxFusedRows> res{};
    for (int64_t r0, r1; rows.claim(lane, r0, r1);)
      for (int64_t r = r0; r < r1; ++r) {
        kern.dot_rows(w.row(kern, r, row_scales.data()), x, kern.row_len(w.kp), m, res.data());
        for (int64_t i = 0; i < m; ++i) out[i * w.n + r] = res[i];
      }
  });
}

// out [M, N] float32 = x W^T (x [M, len] in the kernels' k order), 4 weight rows at a time,
// in slices of kSliceK columns: the 4 decoded row slices (16 KiB) stay in L1 while the
// micro-kernel streams the matching slice of every x row past them.
void linear_gemm4(const CpuKernels& kern, const float* x, int64_t m, const Weight& w, float* out) {
  const int64_t len = kern.row_len(w.kp), nb = len / w.block;
  Pieces groups((w.n + 3) / 4, kGemm4Piece);
  groups.run([&](int64_t lane) {
    std::vector<float> row_scales = w.scale_buffer(kern, 4);
    AlignedFloats rows(static_cast<size_t>(4 * kSliceK));
    std::vector<float> res(static_cast<size_t>(4 * m));
    std::array<PackedRow, 4> prow;
    for (int64_t g0, g1; groups.claim(lane, g0, g1);)
      for (int64_t g = g0; g < g1; ++g) {
        const int64_t nr = std::min<int64_t>(4, w.n - 4 * g);
        for (int64_t i = 0; i < nr; ++i) prow[i] = w.row(kern, 4 * g + i, row_scales.data() + i * nb);
        std::fill(res.begin(), res.end(), 0.0f);
        for (int64_t k0 = 0; k0 < w.kp; k0 += kSliceK) {
          const int64_t k1 = std::min(w.kp, k0 + kSliceK), slen = kern.row_len(k1 - k0);
          for (int64_t i = 0; i < 4; ++i) {
            if (i < nr) {
              const PackedRow& r = prow[i];
              kern.decode_row_linear({r.packed + k0 / 2, r.scales + k0 / w.block, k1 - k0, w.block, r.lut},
                                     rows.data() + i * slen);
            } else {
              std::fill_n(rows.data() + i * slen, slen, 0.0f);
            }
          }
          kern.gemm4(rows.data(), slen, x + k0, len, m, res.data(), 4);
        }
        for (int64_t j = 0; j < m; ++j)
          for (int64_t i = 0; i < nr; ++i) out[j * w.n + 4 * g + i] = res[j * 4 + i];
      }
  });
}

// out [M, N] float32 = x_bf16 [M, k] @ W^T through torch's bf16 GEMM, W decoded to bfloat16
// slab by slab (kBf16SlabRows rows, threads over rows) into one reused buffer.
void linear_bf16_gemm(const CpuKernels& kern, const at::Tensor& x_bf16, const Weight& w, at::Tensor& out) {
  const int64_t k = x_bf16.size(1), slab_rows = std::min(kBf16SlabRows, w.n);
  at::Tensor slab = at::empty({slab_rows, w.kp}, x_bf16.options());
  auto* dst = slab.mutable_data_ptr<c10::BFloat16>();
  for (int64_t r0 = 0; r0 < w.n; r0 += slab_rows) {
    const int64_t rows = std::min(slab_rows, w.n - r0);
    Pieces pieces(rows, 16);
    pieces.run([&](int64_t lane) {
      std::vector<float> row_scales = w.scale_buffer(kern);
      for (int64_t a, b; pieces.claim(lane, a, b);)
        for (int64_t r = a; r < b; ++r) kern.decode_row_bf16(w.row(kern, r0 + r, row_scales.data()), dst + r * w.kp);
    });
    out.narrow(1, r0, rows).copy_(at::mm(x_bf16, slab.narrow(0, 0, rows).narrow(1, 0, k).t()));
  }
}

// Whether this CPU multiplies bfloat16 matrices in hardware (AMX-BF16 or AVX512-BF16), as torch detects it.
bool cpu_has_bf16_matmul() {
  static const bool has = [] {
    const auto caps = at::cpu::get_cpu_capabilities();
    auto flag = [&](const char* name) {
      const auto it = caps.find(name);
      return it != caps.end() && it->second.isBool() && it->second.toBool();
    };
    return flag("amx_bf16") || flag("avx512_bf16");
  }();
  return has;
}

// bf16_gemm_min_rows() for the kernels `kern` (the ones in use).
int64_t bf16_gemm_rows(const CpuKernels& kern) {
  return std::strcmp(kern.isa, "avx512") == 0 && cpu_has_bf16_matmul() ? kBf16GemmMinRows : 0;
}

}  // namespace

int64_t bf16_gemm_min_rows() { return bf16_gemm_rows(cpu_kernels()); }

at::Tensor fp4_linear_cpu(const at::Tensor& x, const at::Tensor& packed, const at::Tensor& scales,
                          const at::Tensor& tensor_scale, const c10::optional<at::Tensor>& bias, const std::string& fmt,
                          int64_t block_size) {
  const PackedWeightArgs args = check_linear_op_args(x, packed, scales, tensor_scale, bias, fmt, block_size);
  const Format f = args.format;
  const int64_t kp = args.k_padded;
  const int64_t k = x.size(-1), n = packed.size(0);
  const CpuKernels kern = cpu_kernels();
  // Every ATen call here is a trip through the dispatcher, which a decoding step pays on one
  // thread with cold caches (tens of µs in all, measured with benchmarks/fp4_cpu_phases.py):
  // float32 x and output skip the conversions, and the output is made in its final shape.
  const int64_t m = x.numel() / k;
  const at::Tensor pk = packed.contiguous(), sc = scales.contiguous();
  const Weight w{pk.const_data_ptr<uint8_t>(), sc, *tensor_scale.const_data_ptr<float>(), f, n, kp, block_size};
  auto sizes = x.sizes().vec();
  sizes.back() = n;
  const int64_t gemm_rows = bf16_gemm_rows(kern);
  if (x.scalar_type() == at::kBFloat16 && gemm_rows > 0 && m >= gemm_rows) {
    at::Tensor out = at::empty({m, n}, x.options().dtype(at::kFloat));
    linear_bf16_gemm(kern, x.reshape({m, k}).contiguous(), w, out);
    if (bias.has_value()) out.add_(bias->to(at::kFloat));
    return out.to(at::kBFloat16).view(sizes);
  }
  const at::Tensor xf = (x.scalar_type() == at::kFloat ? x : x.to(at::kFloat)).contiguous();
  const int64_t len = kern.row_len(kp);
  const AlignedFloats x_ordered = linear_order_x(kern, xf.const_data_ptr<float>(), m, k, kp);
  const float* xp = x_ordered.empty() ? xf.const_data_ptr<float>() : x_ordered.data();
  at::Tensor out = at::empty(sizes, xf.options());
  float* op = out.mutable_data_ptr<float>();
  if (m > 0 && m < kGemm4MinRows) linear_dot_rows(kern, xp, m, w, op);
  if (m >= kGemm4MinRows)
    for (int64_t m0 = 0; m0 < m; m0 += kGemm4MaxRows)
      linear_gemm4(kern, xp + m0 * len, std::min(kGemm4MaxRows, m - m0), w, op + m0 * n);
  if (bias.has_value()) out.add_(bias->to(at::kFloat));
  return x.scalar_type() == at::kFloat ? out : out.to(x.scalar_type());
}

TORCH_LIBRARY_IMPL(apt, CPU, m) { m.impl("fp4_linear", &fp4_linear_cpu); }

}  // namespace apt::fp4
