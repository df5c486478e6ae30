// CPU kernels of apt::fp4_pack / apt::fp4_unpack (low nibble first, docs/contract.md §3).
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <atomic>

#include "fp4/fp4_pack.h"

namespace apt::fp4 {

at::Tensor fp4_pack_cpu(const at::Tensor& codes) {
  check_pack_input(codes);
  auto c = codes.contiguous();
  auto sizes = c.sizes().vec();
  sizes.back() /= 2;
  at::Tensor out = at::empty(sizes, c.options());
  const uint8_t* src = c.const_data_ptr<uint8_t>();
  uint8_t* dst = out.mutable_data_ptr<uint8_t>();
  const int64_t n = out.numel();
  // Validate and pack in one pass; the first bad code found is reported.
  std::atomic<int64_t> bad{-1};
  at::parallel_for(0, n, 1 << 16, [&](int64_t b, int64_t e) {
    for (int64_t j = b; j < e; ++j) {
      const uint8_t lo = src[2 * j], hi = src[2 * j + 1];
      if ((lo | hi) > 15) {
        int64_t expected = -1;
        bad.compare_exchange_strong(expected, lo > 15 ? 2 * j : 2 * j + 1);
      }
      dst[j] = static_cast<uint8_t>((lo & 0xF) | (hi << 4));
    }
  });
  if (bad.load() >= 0) throw_bad_code(bad.load(), static_cast<int>(src[bad.load()]));
  return out;
}

at::Tensor fp4_unpack_cpu(const at::Tensor& packed) {
  check_unpack_input(packed);
  auto p = packed.contiguous();
  auto sizes = p.sizes().vec();
  sizes.back() *= 2;
  at::Tensor out = at::empty(sizes, p.options());
  const uint8_t* src = p.const_data_ptr<uint8_t>();
  uint8_t* dst = out.mutable_data_ptr<uint8_t>();
  at::parallel_for(0, p.numel(), 1 << 16, [&](int64_t b, int64_t e) {
    for (int64_t j = b; j < e; ++j) {
      dst[2 * j] = src[j] & 0xF;
      dst[2 * j + 1] = src[j] >> 4;
    }
  });
  return out;
}

TORCH_LIBRARY_IMPL(apt, CPU, m) {
  m.impl("fp4_pack", &fp4_pack_cpu);
  m.impl("fp4_unpack", &fp4_unpack_cpu);
}

}  // namespace apt::fp4
