// Argument checks of apt::fp4_pack / apt::fp4_unpack, shared by the CPU and CUDA kernels.
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

namespace apt::fp4 {

inline void check_pack_input(const at::Tensor& codes) {
  TORCH_CHECK_TYPE(codes.scalar_type() == c10::ScalarType::Byte, "codes: expected uint8, got ",
                   codes.scalar_type());
  TORCH_CHECK_VALUE(codes.dim() >= 1 && codes.size(-1) % 2 == 0,
                    "codes: expected [..., K] with an even K, got shape ", codes.sizes());
}

inline void check_unpack_input(const at::Tensor& packed) {
  TORCH_CHECK_TYPE(packed.scalar_type() == c10::ScalarType::Byte, "packed: expected uint8, got ",
                   packed.scalar_type());
  TORCH_CHECK_VALUE(packed.dim() >= 1, "packed: expected at least 1 dimension [..., K/2]");
}

}  // namespace apt::fp4
