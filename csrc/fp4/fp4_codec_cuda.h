// Host launchers of the CUDA FP4 codec kernels that other CUDA files reuse.
#pragma once
#include <ATen/core/Tensor.h>

#include "fp4/fp4_format.h"

namespace apt::fp4::cuda {

// Dequantises rows [row0, row0 + rows) of a packed weight (contiguous packed/scales, float32
// tensor_scale on the device) into out[0:rows, 0:ncols] (ncols <= Kp; out's row stride may
// exceed ncols). out's dtype is float32, bfloat16 or float16. Runs on the current stream.
void launch_dequantize(const at::Tensor& packed, const at::Tensor& scales, const at::Tensor& tensor_scale,
                       Format f, int64_t row0, int64_t rows, int64_t ncols, at::Tensor& out);

}  // namespace apt::fp4::cuda
