// CPU implementation of apt::left_spin_residual and its backward: validation, output
// allocation, and the choice of the SIMD build of the row kernels (left_spin_cpu_kernel.h) by
// cpu_isa.h.
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <torch/library.h>

#include <tuple>

#include "cpu_isa.h"
#include "left_spin/left_spin_checks.h"
#include "left_spin/left_spin_cpu.h"

namespace apt::left_spin {
namespace {

using cpu_isa::Isa;

std::tuple<at::Tensor, at::Tensor> forward_cpu(const at::Tensor& u, const at::Tensor& du,
                                               const std::optional<at::Tensor>& du_prev,
                                               const std::optional<at::Tensor>& phi_prev,
                                               double alpha, double tau, double beta, double w1,
                                               double w2, double eps) {
  check_params(alpha, tau, beta, w1, w2, eps);
  const Inputs in = prepare(u, du, du_prev, phi_prev, /*allow_double=*/true);
  at::Tensor out = at::empty_like(in.u);
  at::Tensor phi = at::empty(row_shape(in.u), in.u.options().dtype(in.acc));
  const Params<double> p{alpha, tau, beta, w1, w2, eps};
  switch (cpu_isa::selected(cpu_isa::kLeftSpinEnv)) {  // APT_LEFT_SPIN_CPU_ISA forces one
#ifdef APT_X86
    case Isa::kAvx512: avx512::forward_rows(in, p, out, phi); break;
    case Isa::kAvx2: avx2::forward_rows(in, p, out, phi); break;
#endif
    default: scalar::forward_rows(in, p, out, phi); break;
  }
  return {out, phi};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> backward_cpu(
    const at::Tensor& grad_out, const at::Tensor& grad_phi, const at::Tensor& u,
    const at::Tensor& du, const std::optional<at::Tensor>& du_prev,
    const std::optional<at::Tensor>& phi_prev, double alpha, double tau, double beta, double w1,
    double w2, double eps) {
  check_params(alpha, tau, beta, w1, w2, eps);
  const Inputs in = prepare(u, du, du_prev, phi_prev, /*allow_double=*/true);
  at::Tensor go, gphi;
  prepare_grads(in, grad_out, grad_phi, go, gphi);
  at::Tensor grad_u = at::empty_like(in.u), grad_du = at::empty_like(in.du);
  at::Tensor grad_du_prev = in.du_prev.defined() ? at::empty_like(in.du_prev) : at::empty({0}, u.options());
  at::Tensor grad_phi_prev = in.phi_prev.defined() ? at::empty_like(in.phi_prev)
                                                   : at::empty({0}, u.options().dtype(in.acc));
  const Params<double> p{alpha, tau, beta, w1, w2, eps};
  switch (cpu_isa::selected(cpu_isa::kLeftSpinEnv)) {  // APT_LEFT_SPIN_CPU_ISA forces one
#ifdef APT_X86
    case Isa::kAvx512:
      avx512::backward_rows(in, p, go, gphi, grad_u, grad_du, grad_du_prev, grad_phi_prev);
      break;
    case Isa::kAvx2:
      avx2::backward_rows(in, p, go, gphi, grad_u, grad_du, grad_du_prev, grad_phi_prev);
      break;
#endif
    default:
      scalar::backward_rows(in, p, go, gphi, grad_u, grad_du, grad_du_prev, grad_phi_prev);
      break;
  }
  if (phi_prev.has_value() && phi_prev->defined())
    grad_phi_prev = grad_phi_prev.to(phi_prev->scalar_type());
  return {grad_u, grad_du, grad_du_prev, grad_phi_prev};
}

}  // namespace

TORCH_LIBRARY_IMPL(apt, CPU, m) {
  m.impl("left_spin_residual", &forward_cpu);
  m.impl("left_spin_residual_backward", &backward_cpu);
}

}  // namespace apt::left_spin
