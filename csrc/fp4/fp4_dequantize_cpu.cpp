// CPU kernel of apt::fp4_dequantize: every row decoded by the row kernel of the best ISA
// (fp4_cpu_kernels.h) in float32, then rounded once to the output dtype.
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <torch/library.h>

#include <string>
#include <vector>

#include "fp4/fp4_cpu_kernels.h"

namespace apt::fp4 {

at::Tensor fp4_dequantize_cpu(const at::Tensor& packed, const at::Tensor& scales, const at::Tensor& tensor_scale,
                              const std::string& fmt, int64_t block_size, c10::ScalarType dtype) {
  const PackedWeightArgs args = check_dequantize_args(packed, scales, tensor_scale, fmt, block_size, dtype);
  const Format f = args.format;
  const int64_t kp = args.k_padded;
  const at::Tensor pk = packed.contiguous(), sc = scales.contiguous();
  const float ts = tensor_scale.item<float>();
  const int64_t n = pk.size(0);
  at::Tensor out = at::empty({n, kp}, pk.options().dtype(dtype));
  const CpuKernels kern = cpu_kernels();
  const uint8_t* src = pk.const_data_ptr<uint8_t>();
  at::parallel_for(0, n, 16, [&](int64_t r0, int64_t r1) {
    std::vector<float> row_scales(static_cast<size_t>(kp / block_size));
    std::vector<float> row(dtype == at::kHalf ? static_cast<size_t>(kp) : 0);
    for (int64_t r = r0; r < r1; ++r) {
      row_decode_scales(kern, sc, ts, f, r, row_scales.data());
      const PackedRow pr{src + r * (kp / 2), row_scales.data(), kp, block_size, code_lut(f)};
      if (dtype == at::kFloat) {
        kern.decode_row(pr, out.mutable_data_ptr<float>() + r * kp);
        continue;
      }
      if (dtype == at::kBFloat16) {
        kern.decode_row_bf16(pr, out.mutable_data_ptr<c10::BFloat16>() + r * kp);
      } else {
        kern.decode_row(pr, row.data());
        c10::Half* o = out.mutable_data_ptr<c10::Half>() + r * kp;
        for (int64_t j = 0; j < kp; ++j) o[j] = c10::Half(row[j]);
      }
    }
  });
  return out;
}

TORCH_LIBRARY_IMPL(apt, CPU, m) { m.impl("fp4_dequantize", &fp4_dequantize_cpu); }

}  // namespace apt::fp4
