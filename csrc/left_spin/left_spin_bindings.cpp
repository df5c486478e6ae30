// apt_ext._C.left_spin: the argument checks of apt::left_spin_residual(_backward)
// (left_spin_checks.cpp) for the kernels that are not C++: the Triton and fake kernels call
// them, so every backend raises the same errors from one place.
#include <torch/csrc/utils/pybind.h>  // at::Tensor, ScalarType, Device <-> Python

#include "bindings.h"
#include "left_spin/left_spin_checks.h"

namespace py = pybind11;

namespace apt::left_spin {
namespace {

void bind_left_spin(py::module_& m) {
  auto ls = m.def_submodule("left_spin", "argument checks of the apt::left_spin_residual ops");
  ls.def(
      "check",
      [](const at::Tensor& u, const at::Tensor& du, const std::optional<at::Tensor>& du_prev,
         const std::optional<at::Tensor>& phi_prev, double alpha, double tau, double beta, double w1,
         double w2, double eps, bool allow_double) {
        check_params(alpha, tau, beta, w1, w2, eps);  // in the order the native kernels check
        check_inputs(u, du, du_prev, phi_prev, allow_double);
      },
      "The forward op's checks; allow_double: accept float64 (the CPU kernel does).", py::arg("u"),
      py::arg("du"), py::arg("du_prev"), py::arg("phi_prev"), py::arg("alpha"), py::arg("tau"),
      py::arg("beta"), py::arg("w1"), py::arg("w2"), py::arg("eps"), py::arg("allow_double"));
  ls.def("check_grads", &check_grads, "grad_out [..., D] and grad_phi [...] against u.", py::arg("u"),
         py::arg("grad_out"), py::arg("grad_phi"));
}

APT_REGISTER_BINDINGS(bind_left_spin);

}  // namespace
}  // namespace apt::left_spin
