// Block scale encodings shared by the two tiled layouts (fp4_tiled_layout.h for the CUDA GEMV,
// fp4_cpu_tiled_layout.h for the AVX-512 one): one byte per block that integer arithmetic turns
// into the float exponent and mantissa bits. Defined in fp4_tile.cpp.
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <utility>

namespace apt::fp4 {

// Codes [N, Kp] (uint8) from the packed bytes [N, Kp/2], low nibble first.
at::Tensor unpack_codes(const at::Tensor& packed);

// nvfp4 block scales (float8_e4m3fn) as bytes (E + 9) << 3 | m for scale = 2^E (1 + m/8), E in
// [-9, 8] (E4M3 subnormals normalised), and the mask of zero scales (those blocks' codes must be
// zeroed: their byte reads as 2^-9). A NaN scale raises ValueError.
std::pair<at::Tensor, at::Tensor> encode_nvfp4_scales(const at::Tensor& scales);

// mxfp4 block exponent bytes e shifted by a constant c into [1, 127] (blocks whose codes, given
// as unpacked codes [N, Kp], are all zero may take any byte), and 2^(126 - c). Raises
// ValueError when the exponents of nonzero blocks span more than 126 binades.
std::pair<at::Tensor, double> encode_mxfp4_scales(const at::Tensor& scales, const at::Tensor& codes,
                                                  int64_t block_size);

}  // namespace apt::fp4
