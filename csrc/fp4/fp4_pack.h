// Argument checks of apt::fp4_pack / apt::fp4_unpack, shared by the CPU and CUDA kernels.
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

namespace apt::fp4 {

void check_pack_input(const at::Tensor& codes);

void check_unpack_input(const at::Tensor& packed);

// Raises the ValueError for a code above 15 at flat index `index`.
[[noreturn]] void throw_bad_code(int64_t index, int value);

}  // namespace apt::fp4
