// CPU kernels of the left-spin residual, compiled once per instruction set
// (left_spin_cpu_{avx512,avx2,scalar}.cpp from left_spin_cpu_kernel.h); left_spin_cpu.cpp picks
// one at run time.
#pragma once
#include <ATen/core/Tensor.h>

#include "left_spin/left_spin_checks.h"

#define APT_LS_DECLARE_CPU_KERNELS(isa)                                                         \
  namespace apt::left_spin::isa {                                                               \
  /* out [rows, D] (u's dtype), phi [rows] (in.acc) are preallocated. */                        \
  void forward_rows(const Inputs& in, const Params<double>& p, at::Tensor& out, at::Tensor& phi); \
  /* grad_du_prev / grad_phi_prev are undefined when du_prev / phi_prev are absent. */          \
  void backward_rows(const Inputs& in, const Params<double>& p, const at::Tensor& grad_out,     \
                     const at::Tensor& grad_phi, at::Tensor& grad_u, at::Tensor& grad_du,       \
                     at::Tensor& grad_du_prev, at::Tensor& grad_phi_prev);                      \
  }

APT_LS_DECLARE_CPU_KERNELS(avx512)
APT_LS_DECLARE_CPU_KERNELS(avx2)
APT_LS_DECLARE_CPU_KERNELS(scalar)
