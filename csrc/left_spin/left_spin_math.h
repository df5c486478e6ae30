// Per-row scalar math of the left-spin residual (docs/contract.md §4), shared by the CPU kernels
// and the CUDA kernels (host and device). Inputs are the row sums of squares; the kernels do
// the element-wise work around them.
//
// Zero norms: the gradient of ||v|| at v = 0 is taken as 0 (the subgradient torch's
// vector_norm uses too), so a zero row of u, du, du_prev or du - du_prev adds nothing.
// softplus(x) = x for x > 20 (as torch.nn.functional.softplus), so its derivative is 1 there.
#pragma once
#include <cmath>

#if defined(__CUDACC__)
#define APT_LS_HD __host__ __device__ __forceinline__
#else
#define APT_LS_HD inline
#endif

namespace apt::left_spin {

template <typename acc_t>
struct Params {
  acc_t alpha, tau, beta, w1, w2, eps;
};

template <typename acc_t>
APT_LS_HD Params<acc_t> cast_params(const Params<double>& p) {
  return {acc_t(p.alpha), acc_t(p.tau), acc_t(p.beta), acc_t(p.w1), acc_t(p.w2), acc_t(p.eps)};
}

APT_LS_HD float ls_sqrt(float x) { return sqrtf(x); }
APT_LS_HD double ls_sqrt(double x) { return sqrt(x); }
APT_LS_HD float ls_exp(float x) { return expf(x); }
APT_LS_HD double ls_exp(double x) { return exp(x); }
APT_LS_HD float ls_log1p(float x) { return log1pf(x); }
APT_LS_HD double ls_log1p(double x) { return log1p(x); }

// Sums over one row: |u|^2, |du|^2, |du_prev|^2, |du - du_prev|^2 (the last two 0 without du_prev).
template <typename acc_t>
struct RowSums {
  acc_t uu, dd, pp, ff;
};

template <typename acc_t>
struct RowGate {
  acc_t phi;  // the site's phi (output)
  acc_t g;    // 1 / sqrt(1 + phi^2)
};

// Forward: phi and g of one row. NaN in any input of the row propagates to phi and g.
template <typename acc_t>
APT_LS_HD RowGate<acc_t> row_gate(const RowSums<acc_t>& s, bool has_prev, bool has_phi_prev,
                                  acc_t phi_prev, const Params<acc_t>& p) {
  const acc_t nu = ls_sqrt(s.uu), ndu = ls_sqrt(s.dd);
  acc_t score = p.w1 * (ndu / (p.eps + nu));
  if (has_prev) score += p.w2 * (ls_sqrt(s.ff) / (p.eps + ndu + ls_sqrt(s.pp)));
  const acc_t x = score - p.tau;
  const acc_t phi_raw = p.alpha * (x > acc_t(20) ? x : ls_log1p(ls_exp(x)));
  const acc_t phi = has_phi_prev ? p.beta * phi_prev + (acc_t(1) - p.beta) * phi_raw : phi_raw;
  return {phi, acc_t(1) / ls_sqrt(acc_t(1) + phi * phi)};
}

// Backward coefficients of one row. With go = grad_out row and P = du_prev row:
//   grad_u       = go + cu * u
//   grad_du      = g * go + cdu * du + cdf * (du - P)
//   grad_du_prev = cp * P - cdf * (du - P)
//   grad_phi_prev = gphi_prev
template <typename acc_t>
struct RowGrad {
  acc_t g, cu, cdu, cp, cdf, gphi_prev;
};

// dot_go_du = sum(grad_out * du) over the row, grad_phi = incoming gradient of phi.
template <typename acc_t>
APT_LS_HD RowGrad<acc_t> row_grad(const RowSums<acc_t>& s, acc_t dot_go_du, acc_t grad_phi,
                                  bool has_prev, bool has_phi_prev, acc_t phi_prev,
                                  const Params<acc_t>& p) {
  const acc_t nu = ls_sqrt(s.uu), ndu = ls_sqrt(s.dd);
  const acc_t inv_u = acc_t(1) / (p.eps + nu);
  const acc_t d = ndu * inv_u;
  acc_t a = 0, inv_den = 0, ndp = 0, ndf = 0;
  if (has_prev) {
    ndp = ls_sqrt(s.pp);
    ndf = ls_sqrt(s.ff);
    inv_den = acc_t(1) / (p.eps + ndu + ndp);
    a = ndf * inv_den;
  }
  const acc_t x = p.w1 * d + p.w2 * a - p.tau;
  const acc_t phi_raw = p.alpha * (x > acc_t(20) ? x : ls_log1p(ls_exp(x)));
  const acc_t phi = has_phi_prev ? p.beta * phi_prev + (acc_t(1) - p.beta) * phi_raw : phi_raw;
  const acc_t g = acc_t(1) / ls_sqrt(acc_t(1) + phi * phi);

  // dL/dphi: direct (phi feeds the next site) plus through g (dg/dphi = -phi g^3).
  const acc_t dphi = grad_phi - dot_go_du * phi * g * g * g;
  const acc_t dphi_raw = has_phi_prev ? (acc_t(1) - p.beta) * dphi : dphi;
  const acc_t dsp = x > acc_t(20) ? acc_t(1) : acc_t(1) / (acc_t(1) + ls_exp(-x));
  const acc_t ds = dphi_raw * p.alpha * dsp;  // dL/ds
  // d = ndu/(eps+nu);  a = ndf/(eps+ndu+ndp)
  const acc_t dnu = -p.w1 * ds * d * inv_u;
  acc_t dndu = p.w1 * ds * inv_u;
  acc_t dndp = 0, dndf = 0;
  if (has_prev) {
    dndu -= p.w2 * ds * a * inv_den;
    dndp = -p.w2 * ds * a * inv_den;
    dndf = p.w2 * ds * inv_den;
  }
  RowGrad<acc_t> r;
  r.g = g;
  r.cu = nu > acc_t(0) ? dnu / nu : acc_t(0);
  r.cdu = ndu > acc_t(0) ? dndu / ndu : acc_t(0);
  r.cp = ndp > acc_t(0) ? dndp / ndp : acc_t(0);
  r.cdf = ndf > acc_t(0) ? dndf / ndf : acc_t(0);
  r.gphi_prev = has_phi_prev ? p.beta * dphi : acc_t(0);
  return r;
}

}  // namespace apt::left_spin
