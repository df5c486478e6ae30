// Argument checks and input preparation of apt::left_spin_residual(_backward), shared by the
// CPU and CUDA kernels. The Triton and fake kernels (apt_ext/left_spin/) call these checks through apt_ext._C.
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <cmath>
#include <optional>

#include "left_spin/left_spin_math.h"

namespace apt::left_spin {

// Contiguous inputs of one call (du and du_prev share one dtype, u's or a 16-bit one beside a
// float32 u). du_prev / phi_prev are undefined tensors when absent;
// phi_prev is converted to the accumulation dtype (float32, float64 for float64 inputs).
struct Inputs {
  at::Tensor u, du, du_prev, phi_prev;
  int64_t rows = 0, D = 0;
  at::ScalarType acc = at::kFloat;
};

void check_params(double alpha, double tau, double beta, double w1, double w2, double eps);

// The CUDA kernels' limits: u on a CUDA device, D <= 2^30, rows < 2^31.
void check_cuda_inputs(const Inputs& in);

// Every argument check of the forward op's tensors (no copies). du has u's dtype, or is
// bfloat16 / float16 beside a float32 u; du_prev has du's dtype. allow_double: float64 inputs
// (the CPU kernel accepts them, for gradcheck). The Triton and fake kernels call it (and
// check_grads, check_params) through apt_ext._C.left_spin (left_spin_bindings.cpp).
void check_inputs(const at::Tensor& u, const at::Tensor& du, const std::optional<at::Tensor>& du_prev,
                  const std::optional<at::Tensor>& phi_prev, bool allow_double);

// The backward op's grad_out [..., D] and grad_phi [...] against u.
void check_grads(const at::Tensor& u, const at::Tensor& grad_out, const at::Tensor& grad_phi);

// check_inputs, then contiguous copies (and phi_prev in the accumulation dtype).
Inputs prepare(const at::Tensor& u, const at::Tensor& du,
                      const std::optional<at::Tensor>& du_prev,
                      const std::optional<at::Tensor>& phi_prev, bool allow_double);

// check_grads, then grad_out [..., D] -> u's dtype, contiguous; grad_phi [...] -> the
// accumulation dtype.
void prepare_grads(const Inputs& in, const at::Tensor& grad_out, const at::Tensor& grad_phi,
                          at::Tensor& go, at::Tensor& gphi);

inline at::IntArrayRef row_shape(const at::Tensor& u) { return u.sizes().slice(0, u.dim() - 1); }

}  // namespace apt::left_spin
