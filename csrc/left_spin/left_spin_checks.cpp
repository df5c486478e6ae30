// Argument checks and input preparation of apt::left_spin_residual(_backward) (declared in
// left_spin_checks.h), compiled once and shared by the CPU and CUDA kernels.
#include "left_spin/left_spin_checks.h"

namespace apt::left_spin {

void check_params(double alpha, double tau, double beta, double w1, double w2, double eps) {
  TORCH_CHECK_VALUE(std::isfinite(alpha) && std::isfinite(tau) && std::isfinite(beta) &&
                        std::isfinite(w1) && std::isfinite(w2),
                    "alpha, tau, beta, w1, w2: expected finite numbers, got ", alpha, ", ", tau,
                    ", ", beta, ", ", w1, ", ", w2);
  TORCH_CHECK_VALUE(std::isfinite(eps) && eps >= 0, "eps: expected a finite number >= 0, got ", eps);
}

namespace {

// t [..., D] (du or du_prev) has u's shape and device.
void check_like_u(const at::Tensor& u, const at::Tensor& t, const char* name) {
  TORCH_CHECK_VALUE(t.sizes() == u.sizes(), name, ": expected the shape of u ", u.sizes(), ", got ",
                    t.sizes());
  TORCH_CHECK_VALUE(t.device() == u.device(), name, ": expected the device of u (", u.device(),
                    "), got ", t.device());
}

bool is_half_precision(at::ScalarType st) { return st == at::kBFloat16 || st == at::kHalf; }

}  // namespace

void check_inputs(const at::Tensor& u, const at::Tensor& du, const std::optional<at::Tensor>& du_prev,
                  const std::optional<at::Tensor>& phi_prev, bool allow_double) {
  const auto st = u.scalar_type();
  const bool ok = st == at::kFloat || st == at::kBFloat16 || st == at::kHalf ||
                  (allow_double && st == at::kDouble);
  TORCH_CHECK_TYPE(ok, "u: expected float32, bfloat16 or float16",
                   allow_double ? " (or float64)" : "", ", got ", st);
  TORCH_CHECK_VALUE(u.dim() >= 1, "u: expected a tensor [..., D] with at least 1 dimension");
  TORCH_CHECK_VALUE(u.size(-1) > 0, "u: the last dimension D must be > 0, got shape ", u.sizes());
  check_like_u(u, du, "du");
  // du: u's dtype, or bfloat16 / float16 beside a float32 u (a branch output under autocast
  // beside a float32 residual stream); du_prev: du's dtype.
  TORCH_CHECK_TYPE(du.scalar_type() == st || (st == at::kFloat && is_half_precision(du.scalar_type())),
                   "du: expected the dtype of u (", st, ")",
                   st == at::kFloat ? ", or bfloat16 / float16 beside a float32 u" : "", ", got ",
                   du.scalar_type());
  if (du_prev.has_value() && du_prev->defined()) {
    check_like_u(u, *du_prev, "du_prev");
    TORCH_CHECK_TYPE(du_prev->scalar_type() == du.scalar_type(), "du_prev: expected the dtype of du (",
                     du.scalar_type(), "), got ", du_prev->scalar_type());
  }
  if (phi_prev.has_value() && phi_prev->defined()) {
    const auto& pp = *phi_prev;
    TORCH_CHECK_TYPE(at::isFloatingType(pp.scalar_type()),
                     "phi_prev: expected a floating-point tensor (float32), got ", pp.scalar_type());
    TORCH_CHECK_VALUE(pp.sizes() == row_shape(u), "phi_prev: expected shape u.shape[:-1] = ",
                      row_shape(u), ", got ", pp.sizes());
    TORCH_CHECK_VALUE(pp.device() == u.device(), "phi_prev: expected the device of u (", u.device(),
                      "), got ", pp.device());
  }
}

void check_grads(const at::Tensor& u, const at::Tensor& grad_out, const at::Tensor& grad_phi) {
  TORCH_CHECK_VALUE(grad_out.sizes() == u.sizes(), "grad_out: expected the shape of u ", u.sizes(),
                    ", got ", grad_out.sizes());
  TORCH_CHECK_VALUE(grad_phi.sizes() == row_shape(u), "grad_phi: expected shape u.shape[:-1] = ",
                    row_shape(u), ", got ", grad_phi.sizes());
  TORCH_CHECK_TYPE(at::isFloatingType(grad_out.scalar_type()) &&
                       at::isFloatingType(grad_phi.scalar_type()),
                   "grad_out, grad_phi: expected floating-point tensors, got ",
                   grad_out.scalar_type(), " and ", grad_phi.scalar_type());
  TORCH_CHECK_VALUE(grad_out.device() == u.device() && grad_phi.device() == u.device(),
                    "grad_out, grad_phi: expected the device of u (", u.device(), ")");
}

Inputs prepare(const at::Tensor& u, const at::Tensor& du,
                      const std::optional<at::Tensor>& du_prev,
                      const std::optional<at::Tensor>& phi_prev, bool allow_double) {
  check_inputs(u, du, du_prev, phi_prev, allow_double);
  Inputs in;
  in.D = u.size(-1);
  in.rows = u.numel() / in.D;
  in.acc = u.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  in.u = u.contiguous();
  in.du = du.contiguous();
  if (du_prev.has_value() && du_prev->defined()) in.du_prev = du_prev->contiguous();
  if (phi_prev.has_value() && phi_prev->defined()) in.phi_prev = phi_prev->to(in.acc).contiguous();
  return in;
}

void prepare_grads(const Inputs& in, const at::Tensor& grad_out, const at::Tensor& grad_phi,
                          at::Tensor& go, at::Tensor& gphi) {
  check_grads(in.u, grad_out, grad_phi);
  go = grad_out.to(in.u.scalar_type()).contiguous();
  gphi = grad_phi.to(in.acc).contiguous();
}

void check_cuda_inputs(const Inputs& in) {
  TORCH_CHECK_VALUE(in.u.is_cuda(), "u: expected a CUDA tensor, got ", in.u.device());
  TORCH_CHECK_VALUE(in.D <= (int64_t{1} << 30), "u: D = ", in.D, " is too large (max 2^30)");
  TORCH_CHECK_VALUE(in.rows < (int64_t{1} << 31), "u: too many rows (", in.rows, ")");
}

}  // namespace apt::left_spin
