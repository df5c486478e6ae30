// apt_ext._C.fp4: the FP4 format table of fp4_format.h (tests compare it with
// apt_ext/fp4/format.py) and the ops' argument checks (fp4_checks.cpp) for the kernels that are
// not C++: the Triton kernels and the fake kernels call them, so every backend raises the same
// errors from one place.
#include <torch/csrc/utils/pybind.h>  // at::Tensor, ScalarType, Device <-> Python

#include "bindings.h"
#include "fp4/fp4_cpu_kernels.h"
#include "fp4/fp4_format.h"
#include "fp4/fp4_pack.h"

namespace py = pybind11;

namespace apt::fp4 {
namespace {

py::list format_table() {
  py::list out;
  for (Format f : kFormats) {
    const float* values = f == Format::NF4 ? kNF4 : kE2M1;
    py::dict d;
    d["name"] = name_of(f);
    d["id"] = static_cast<int>(f);
    d["block_size"] = block_size_of(f);
    d["scale_dtype"] = scale_dtype(f);
    d["values"] = std::vector<float>(values, values + 16);
    d["zero_code"] = static_cast<int>(zero_code(f));
    out.append(d);
  }
  return out;
}

void bind_fp4(py::module_& m) {
  auto fp4 = m.def_submodule("fp4", "FP4 format table and the argument checks of the apt::fp4_* ops");
  fp4.def("format_table", &format_table,
          "[{name, id, block_size, scale_dtype, values (16 floats), zero_code}] of csrc/fp4/fp4_format.h");
  fp4.def("check_pack", &check_pack_input, py::arg("codes"));
  fp4.def("check_unpack", &check_unpack_input, py::arg("packed"));
  fp4.def(
      "check_quantize",
      [](const at::Tensor& w, const std::string& fmt, int64_t block_size) {
        check_quantize_args(w, fmt, block_size);
      },
      py::arg("w"), py::arg("fmt"), py::arg("block_size"));
  fp4.def(
      "check_dequantize",
      [](const at::Tensor& packed, const at::Tensor& scales, const at::Tensor& tensor_scale,
         const std::string& fmt, int64_t block_size, c10::ScalarType dtype) {
        return check_dequantize_args(packed, scales, tensor_scale, fmt, block_size, dtype).k_padded;
      },
      "-> K_padded", py::arg("packed"), py::arg("scales"), py::arg("tensor_scale"), py::arg("fmt"),
      py::arg("block_size"), py::arg("dtype"));
  fp4.def(
      "check_linear",
      [](const at::Tensor& x, const at::Tensor& packed, const at::Tensor& scales,
         const at::Tensor& tensor_scale, const c10::optional<at::Tensor>& bias, const std::string& fmt,
         int64_t block_size) {
        return check_linear_op_args(x, packed, scales, tensor_scale, bias, fmt, block_size).k_padded;
      },
      "-> K_padded", py::arg("x"), py::arg("packed"), py::arg("scales"), py::arg("tensor_scale"),
      py::arg("bias"), py::arg("fmt"), py::arg("block_size"));
  fp4.def("cpu_path", [] { return std::string(cpu_kernels().isa); },
          "the FP4 CPU kernels' SIMD path now (APT_FP4_CPU_ISA or the best supported): scalar, avx2 or avx512");
  fp4.def("bf16_gemm_min_rows", &bf16_gemm_min_rows,
          "rows of bfloat16 x from which fp4_linear's CPU kernel uses torch's bf16 GEMM (0: never, here and now)");
  fp4.def(
      "check_cpu_tile",
      [](const at::Tensor& packed, const at::Tensor& scales, const at::Tensor& tensor_scale, const std::string& fmt,
         int64_t block_size) { return check_cpu_tile_args(packed, scales, tensor_scale, fmt, block_size).k_padded; },
      "-> K_padded", py::arg("packed"), py::arg("scales"), py::arg("tensor_scale"), py::arg("fmt"),
      py::arg("block_size"));
  fp4.def(
      "check_linear_cpu_tiled",
      [](const at::Tensor& x, const at::Tensor& tiles, const at::Tensor& tile_scales, const at::Tensor& out_scale,
         const c10::optional<at::Tensor>& bias, const std::string& fmt, int64_t n, int64_t k) {
        return check_cpu_tiled_linear_args(x, tiles, tile_scales, out_scale, bias, fmt, n, k).k_padded;
      },
      "-> K_padded", py::arg("x"), py::arg("tiles"), py::arg("tile_scales"), py::arg("out_scale"), py::arg("bias"),
      py::arg("fmt"), py::arg("n"), py::arg("k"));
}

APT_REGISTER_BINDINGS(bind_fp4);

}  // namespace
}  // namespace apt::fp4
