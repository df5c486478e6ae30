// CUDA kernels of apt::left_spin_residual and its backward.
//
// One group of TPR threads owns one row (TPR = 8 or 32: several rows per 128-thread block,
// reduced with warp shuffles; TPR >= 128: one row per block, reduced through shared memory).
// Each thread reads packs of VEC elements of every input (16 bytes of du's dtype; with a
// float32 u beside a bfloat16 / float16 du, 8 elements: 32 bytes of u, 16 of du), VPT packs per
// tensor and pass, coalesced across the group. When the row fits in the group's registers
// (D/VEC <= TPR*VPT, "resident") every input is read from memory exactly once: forward reads
// u, du, du_prev and writes out (+ phi); backward reads u, du, du_prev, grad_out and writes the
// three input gradients (+ grad_phi_prev), without [rows, D] intermediates. Longer rows loop
// over the row twice (the second pass mostly hits L2). All math is float32.
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <torch/library.h>

#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>

#include <cstdint>
#include <tuple>

#include "left_spin/left_spin_checks.h"
#include "left_spin/left_spin_math.h"

namespace apt::left_spin {
namespace {

constexpr int kVPT = 4;           // packs per thread, per tensor and pass
constexpr int kBlockThreads = 128;  // block size when TPR < 128 (several rows per block)
constexpr int kLoopTPR = 512;     // group size of the two-pass kernels (rows too long to keep)

// VEC elements of T, read and written as one access (16 bytes for VEC > 1), unpacked to
// float element by element. The 16-bit types stay packed two per 32-bit register until used.
template <typename T, int VEC>
struct Pack;

template <typename T>
struct Pack<T, 1> {
  T v;
  __device__ __forceinline__ float get(int) const { return static_cast<float>(v); }
  __device__ __forceinline__ void set(const float (&f)[1]) { v = static_cast<T>(f[0]); }
  __device__ __forceinline__ void zero() { v = T(0.0f); }
};

// 4 floats (one 16-byte access), or 8 beside a 16-bit du (two).
template <int VEC>
struct alignas(16) FloatPack {
  float v[VEC];
  __device__ __forceinline__ float get(int e) const { return v[e]; }
  __device__ __forceinline__ void set(const float (&f)[VEC]) {
#pragma unroll
    for (int e = 0; e < VEC; ++e) v[e] = f[e];
  }
  __device__ __forceinline__ void zero() {
#pragma unroll
    for (int e = 0; e < VEC; ++e) v[e] = 0.f;
  }
};

template <>
struct Pack<float, 4> : FloatPack<4> {};
template <>
struct Pack<float, 8> : FloatPack<8> {};

// Eight 16-bit values, two per word (element 2j in the low half of word j).
struct alignas(16) Words16 {
  uint32_t w[4];
  __device__ __forceinline__ void zero() { w[0] = w[1] = w[2] = w[3] = 0u; }
};

template <>
struct alignas(16) Pack<c10::BFloat16, 8> : Words16 {
  __device__ __forceinline__ float get(int e) const {
    const uint32_t x = w[e / 2];
    return __uint_as_float(e % 2 == 0 ? x << 16 : x & 0xffff0000u);
  }
  __device__ __forceinline__ void set(const float (&f)[8]) {
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const __nv_bfloat162 h = __floats2bfloat162_rn(f[2 * j], f[2 * j + 1]);
      w[j] = *reinterpret_cast<const uint32_t*>(&h);
    }
  }
};

template <>
struct alignas(16) Pack<c10::Half, 8> : Words16 {
  __device__ __forceinline__ float get(int e) const {
    const uint32_t x = w[e / 2];
    const __half2 h = *reinterpret_cast<const __half2*>(&x);
    return e % 2 == 0 ? __low2float(h) : __high2float(h);
  }
  __device__ __forceinline__ void set(const float (&f)[8]) {
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const __half2 h = __floats2half2_rn(f[2 * j], f[2 * j + 1]);
      w[j] = *reinterpret_cast<const uint32_t*>(&h);
    }
  }
};

template <int TPR>
constexpr int block_threads() {
  return TPR >= kBlockThreads ? TPR : kBlockThreads;
}

// Row pointers of one call: TU is u's dtype (also out's, grad_out's and grad_u's), TD du's and
// du_prev's (also their gradients').
template <typename TU, typename TD>
struct RowPtrs {
  const TU* u;
  const TD* du;
  const TD* dp;           // null without du_prev
  const float* phi_prev;  // null without phi_prev
};

// x[k] = row[base + k*TPR + lane] for k < kVPT where in range, zeros elsewhere.
template <typename T, int VEC, int TPR>
__device__ __forceinline__ void load_packs(Pack<T, VEC> (&x)[kVPT], const T* row, int base,
                                           int lane, int nvec) {
  const auto* p = reinterpret_cast<const Pack<T, VEC>*>(row);
#pragma unroll
  for (int k = 0; k < kVPT; ++k) {
    const int i = base + k * TPR + lane;
    if (i < nvec) {
      x[k] = p[i];
    } else {
      x[k].zero();
    }
  }
}

template <typename T, int VEC, int TPR>
__device__ __forceinline__ void store_pack(T* row, int i, int nvec, const float (&f)[VEC]) {
  if (i < nvec) {
    Pack<T, VEC> o;
    o.set(f);
    reinterpret_cast<Pack<T, VEC>*>(row)[i] = o;
  }
}

// Sums v[0..N) over the TPR threads of a row; every thread of the row gets the totals.
template <int TPR, int N>
__device__ __forceinline__ void row_sum(float (&v)[N]) {
  constexpr int kWarpWidth = TPR < 32 ? TPR : 32;
#pragma unroll
  for (int off = kWarpWidth / 2; off > 0; off /= 2) {
#pragma unroll
    for (int j = 0; j < N; ++j) v[j] += __shfl_xor_sync(0xffffffffu, v[j], off, kWarpWidth);
  }
  if constexpr (TPR > 32) {
    constexpr int kWarps = TPR / 32;
    __shared__ float partial[kWarps][N];
    const int warp = threadIdx.x / 32;
    if (threadIdx.x % 32 == 0) {
#pragma unroll
      for (int j = 0; j < N; ++j) partial[warp][j] = v[j];
    }
    __syncthreads();
#pragma unroll
    for (int j = 0; j < N; ++j) {
      float s = 0.f;
#pragma unroll
      for (int w = 0; w < kWarps; ++w) s += partial[w][j];
      v[j] = s;
    }
  }
}

// Adds |u|^2, |du|^2, |du_prev|^2, |du - du_prev|^2 of the packs to s[0..4).
template <typename TU, typename TD, int VEC>
__device__ __forceinline__ void add_sums(float (&s)[4], const Pack<TU, VEC> (&u)[kVPT],
                                         const Pack<TD, VEC> (&du)[kVPT],
                                         const Pack<TD, VEC> (&dp)[kVPT], bool has_prev) {
#pragma unroll
  for (int k = 0; k < kVPT; ++k) {
#pragma unroll
    for (int e = 0; e < VEC; ++e) {
      const float a = u[k].get(e), b = du[k].get(e);
      s[0] = fmaf(a, a, s[0]);
      s[1] = fmaf(b, b, s[1]);
      if (has_prev) {
        const float c = dp[k].get(e), f = b - c;
        s[2] = fmaf(c, c, s[2]);
        s[3] = fmaf(f, f, s[3]);
      }
    }
  }
}

// Which row this thread works on, its lane in the row's group, and the row's pack count
// (0 for the padding rows of the last block, which still take part in the shuffles).
template <int TPR>
struct RowSlot {
  int64_t row;
  int lane;
  int nvec;
  __device__ RowSlot(int64_t rows, int nvec_row) {
    constexpr int kRowsPerBlock = block_threads<TPR>() / TPR;
    row = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + threadIdx.x / TPR;
    lane = threadIdx.x % TPR;
    nvec = row < rows ? nvec_row : 0;
  }
};

// RESIDENT: the host guarantees nvec <= TPR*kVPT, so both passes run once and the second
// reuses the registers of the first.
template <typename TU, typename TD, int VEC, int TPR, bool RESIDENT>
__global__ void __launch_bounds__(block_threads<TPR>())
    left_spin_forward_kernel(RowPtrs<TU, TD> in, TU* __restrict__ out, float* __restrict__ phi,
                             int64_t rows, int D, Params<float> p) {
  const RowSlot<TPR> slot(rows, D / VEC);
  const int64_t off = slot.row * D;
  const bool has_prev = in.dp != nullptr;
  constexpr int kStep = TPR * kVPT;
  Pack<TU, VEC> u[kVPT];
  Pack<TD, VEC> du[kVPT], dp[kVPT];
  float s[4] = {0.f, 0.f, 0.f, 0.f};
  for (int base = 0; base < slot.nvec; base += kStep) {
    load_packs<TU, VEC, TPR>(u, in.u + off, base, slot.lane, slot.nvec);
    load_packs<TD, VEC, TPR>(du, in.du + off, base, slot.lane, slot.nvec);
    if (has_prev) load_packs<TD, VEC, TPR>(dp, in.dp + off, base, slot.lane, slot.nvec);
    add_sums<TU, TD, VEC>(s, u, du, dp, has_prev);
    if (RESIDENT) break;
  }
  row_sum<TPR, 4>(s);
  if (slot.nvec == 0) return;
  const bool has_phi_prev = in.phi_prev != nullptr;
  const RowGate<float> gate = row_gate<float>({s[0], s[1], s[2], s[3]}, has_prev, has_phi_prev,
                                              has_phi_prev ? in.phi_prev[slot.row] : 0.f, p);
  if (slot.lane == 0) phi[slot.row] = gate.phi;
  for (int base = 0; base < slot.nvec; base += kStep) {
    if (!RESIDENT) {
      load_packs<TU, VEC, TPR>(u, in.u + off, base, slot.lane, slot.nvec);
      load_packs<TD, VEC, TPR>(du, in.du + off, base, slot.lane, slot.nvec);
    }
#pragma unroll
    for (int k = 0; k < kVPT; ++k) {
      float o[VEC];
#pragma unroll
      for (int e = 0; e < VEC; ++e)
        o[e] = fmaf(gate.g, du[k].get(e), u[k].get(e));
      store_pack<TU, VEC, TPR>(out + off, base + k * TPR + slot.lane, slot.nvec, o);
    }
    if (RESIDENT) break;
  }
}

template <typename TU, typename TD>
struct GradPtrs {
  const TU* grad_out;
  const float* grad_phi;
  TU* grad_u;
  TD* grad_du;
  TD* grad_dp;             // null without du_prev
  float* grad_phi_prev;    // null without phi_prev
};

template <typename TU, typename TD, int VEC, int TPR, bool RESIDENT>
__global__ void __launch_bounds__(block_threads<TPR>())
    left_spin_backward_kernel(RowPtrs<TU, TD> in, GradPtrs<TU, TD> gr, int64_t rows, int D,
                              Params<float> p) {
  const RowSlot<TPR> slot(rows, D / VEC);
  const int64_t off = slot.row * D;
  const bool has_prev = in.dp != nullptr;
  constexpr int kStep = TPR * kVPT;
  Pack<TU, VEC> u[kVPT], go[kVPT];
  Pack<TD, VEC> du[kVPT], dp[kVPT];
  float s[5] = {0.f, 0.f, 0.f, 0.f, 0.f};  // |u|^2 |du|^2 |dp|^2 |du-dp|^2 <go,du>
  for (int base = 0; base < slot.nvec; base += kStep) {
    load_packs<TU, VEC, TPR>(u, in.u + off, base, slot.lane, slot.nvec);
    load_packs<TD, VEC, TPR>(du, in.du + off, base, slot.lane, slot.nvec);
    load_packs<TU, VEC, TPR>(go, gr.grad_out + off, base, slot.lane, slot.nvec);
    if (has_prev) load_packs<TD, VEC, TPR>(dp, in.dp + off, base, slot.lane, slot.nvec);
    float s4[4] = {s[0], s[1], s[2], s[3]};
    add_sums<TU, TD, VEC>(s4, u, du, dp, has_prev);
#pragma unroll
    for (int j = 0; j < 4; ++j) s[j] = s4[j];
#pragma unroll
    for (int k = 0; k < kVPT; ++k)
#pragma unroll
      for (int e = 0; e < VEC; ++e)
        s[4] = fmaf(go[k].get(e), du[k].get(e), s[4]);
    if (RESIDENT) break;
  }
  row_sum<TPR, 5>(s);
  if (slot.nvec == 0) return;
  const bool has_phi_prev = in.phi_prev != nullptr;
  const RowGrad<float> c =
      row_grad<float>({s[0], s[1], s[2], s[3]}, s[4], gr.grad_phi[slot.row], has_prev,
                      has_phi_prev, has_phi_prev ? in.phi_prev[slot.row] : 0.f, p);
  if (slot.lane == 0 && has_phi_prev) gr.grad_phi_prev[slot.row] = c.gphi_prev;
  for (int base = 0; base < slot.nvec; base += kStep) {
    if (!RESIDENT) {
      load_packs<TU, VEC, TPR>(u, in.u + off, base, slot.lane, slot.nvec);
      load_packs<TD, VEC, TPR>(du, in.du + off, base, slot.lane, slot.nvec);
      load_packs<TU, VEC, TPR>(go, gr.grad_out + off, base, slot.lane, slot.nvec);
      if (has_prev) load_packs<TD, VEC, TPR>(dp, in.dp + off, base, slot.lane, slot.nvec);
    }
#pragma unroll
    for (int k = 0; k < kVPT; ++k) {
      const int i = base + k * TPR + slot.lane;
      float gu[VEC], gd[VEC], gp[VEC];
#pragma unroll
      for (int e = 0; e < VEC; ++e) {
        const float a = u[k].get(e), b = du[k].get(e);
        const float y = go[k].get(e);
        gu[e] = fmaf(c.cu, a, y);
        gd[e] = fmaf(c.cdu, b, c.g * y);
        if (has_prev) {
          const float q = dp[k].get(e), f = b - q;
          gd[e] = fmaf(c.cdf, f, gd[e]);
          gp[e] = fmaf(c.cp, q, -c.cdf * f);
        }
      }
      store_pack<TU, VEC, TPR>(gr.grad_u + off, i, slot.nvec, gu);
      store_pack<TD, VEC, TPR>(gr.grad_du + off, i, slot.nvec, gd);
      if (has_prev) store_pack<TD, VEC, TPR>(gr.grad_dp + off, i, slot.nvec, gp);
    }
    if (RESIDENT) break;
  }
}

// ---- launch configuration -------------------------------------------------------------

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// Calls launch.template run<VEC, TPR, RESIDENT>(grid, block) with the smallest group
// that keeps the row in registers, or the two-pass kernel for longer rows. VEC is 16 bytes of
// TD (du's dtype, never wider than u's) when D and every row pointer allow it, else 1.
template <typename TD, typename Launch>
void dispatch_config(int64_t rows, int64_t D, bool vec_ok, Launch&& launch) {
  constexpr int kVec = 16 / sizeof(TD);
  auto pick = [&](auto vec_tag) {
    constexpr int VEC = decltype(vec_tag)::value;
    const int64_t nvec = D / VEC;
    auto go = [&](auto tpr_tag, auto resident_tag) {
      constexpr int TPR = decltype(tpr_tag)::value;
      constexpr int kRowsPerBlock = block_threads<TPR>() / TPR;
      const int64_t blocks = (rows + kRowsPerBlock - 1) / kRowsPerBlock;
      launch.template run<VEC, TPR, decltype(resident_tag)::value>(
          dim3(static_cast<unsigned>(blocks)), dim3(block_threads<TPR>()));
    };
    using std::integral_constant;
    using Yes = integral_constant<bool, true>;
    if (nvec <= 8 * kVPT) return go(integral_constant<int, 8>{}, Yes{});
    if (nvec <= 32 * kVPT) return go(integral_constant<int, 32>{}, Yes{});
    if (nvec <= 128 * kVPT) return go(integral_constant<int, 128>{}, Yes{});
    if (nvec <= 256 * kVPT) return go(integral_constant<int, 256>{}, Yes{});
    if (nvec <= kLoopTPR * kVPT) return go(integral_constant<int, kLoopTPR>{}, Yes{});
    return go(integral_constant<int, kLoopTPR>{}, integral_constant<bool, false>{});
  };
  if (vec_ok && D % kVec == 0) {
    pick(std::integral_constant<int, kVec>{});
  } else {
    pick(std::integral_constant<int, 1>{});
  }
}

template <typename TU, typename TD>
struct ForwardLaunch {
  RowPtrs<TU, TD> in;
  TU* out;
  float* phi;
  int64_t rows;
  int D;
  Params<float> p;
  cudaStream_t stream;
  template <int VEC, int TPR, bool RESIDENT>
  void run(dim3 grid, dim3 block) const {
    left_spin_forward_kernel<TU, TD, VEC, TPR, RESIDENT>
        <<<grid, block, 0, stream>>>(in, out, phi, rows, D, p);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
};

template <typename TU, typename TD>
struct BackwardLaunch {
  RowPtrs<TU, TD> in;
  GradPtrs<TU, TD> gr;
  int64_t rows;
  int D;
  Params<float> p;
  cudaStream_t stream;
  template <int VEC, int TPR, bool RESIDENT>
  void run(dim3 grid, dim3 block) const {
    left_spin_backward_kernel<TU, TD, VEC, TPR, RESIDENT>
        <<<grid, block, 0, stream>>>(in, gr, rows, D, p);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
};

template <typename TU, typename TD>
RowPtrs<TU, TD> row_ptrs(const Inputs& in) {
  return {in.u.const_data_ptr<TU>(), in.du.const_data_ptr<TD>(),
          in.du_prev.defined() ? in.du_prev.const_data_ptr<TD>() : nullptr,
          in.phi_prev.defined() ? in.phi_prev.const_data_ptr<float>() : nullptr};
}

template <typename TU, typename TD>
bool row_ptrs_aligned(const RowPtrs<TU, TD>& r) {
  return aligned16(r.u) && aligned16(r.du) && (r.dp == nullptr || aligned16(r.dp));
}

template <typename TU_, typename TD_>
struct CudaTypes {
  using TU = TU_;
  using TD = TD_;
};

// Calls f(CudaTypes<TU, TD>{}) for u's and du's dtypes: one of float32 / bfloat16 / float16
// for both, or a float32 u beside a bfloat16 / float16 du (check_inputs allows no others).
template <typename F>
void dispatch_dtypes(const Inputs& in, F&& f) {
  const at::ScalarType su = in.u.scalar_type(), sd = in.du.scalar_type();
  if (su == at::kFloat && sd == at::kFloat) return f(CudaTypes<float, float>{});
  if (su == at::kBFloat16 && sd == at::kBFloat16) return f(CudaTypes<c10::BFloat16, c10::BFloat16>{});
  if (su == at::kHalf && sd == at::kHalf) return f(CudaTypes<c10::Half, c10::Half>{});
  if (su == at::kFloat && sd == at::kBFloat16) return f(CudaTypes<float, c10::BFloat16>{});
  if (su == at::kFloat && sd == at::kHalf) return f(CudaTypes<float, c10::Half>{});
  TORCH_CHECK_TYPE(false, "u, du: unsupported dtypes ", su, " and ", sd);
}

std::tuple<at::Tensor, at::Tensor> forward_cuda(const at::Tensor& u, const at::Tensor& du,
                                                const std::optional<at::Tensor>& du_prev,
                                                const std::optional<at::Tensor>& phi_prev,
                                                double alpha, double tau, double beta, double w1,
                                                double w2, double eps) {
  check_params(alpha, tau, beta, w1, w2, eps);
  const c10::cuda::CUDAGuard guard(u.device());
  const Inputs in = prepare(u, du, du_prev, phi_prev, /*allow_double=*/false);
  check_cuda_inputs(in);
  at::Tensor out = at::empty_like(in.u);
  at::Tensor phi = at::empty(row_shape(in.u), in.u.options().dtype(at::kFloat));
  if (in.rows == 0) return {out, phi};
  const Params<float> p = cast_params<float>(Params<double>{alpha, tau, beta, w1, w2, eps});
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  dispatch_dtypes(in, [&](auto types) {
    using TU = typename decltype(types)::TU;
    using TD = typename decltype(types)::TD;
    const RowPtrs<TU, TD> ptrs = row_ptrs<TU, TD>(in);
    TU* o = out.mutable_data_ptr<TU>();
    float* ph = phi.mutable_data_ptr<float>();
    const bool vec_ok = row_ptrs_aligned(ptrs) && aligned16(o);
    dispatch_config<TD>(in.rows, in.D, vec_ok,
                        ForwardLaunch<TU, TD>{ptrs, o, ph, in.rows, static_cast<int>(in.D), p, stream});
  });
  return {out, phi};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> backward_cuda(
    const at::Tensor& grad_out, const at::Tensor& grad_phi, const at::Tensor& u,
    const at::Tensor& du, const std::optional<at::Tensor>& du_prev,
    const std::optional<at::Tensor>& phi_prev, double alpha, double tau, double beta, double w1,
    double w2, double eps) {
  check_params(alpha, tau, beta, w1, w2, eps);
  const c10::cuda::CUDAGuard guard(u.device());
  const Inputs in = prepare(u, du, du_prev, phi_prev, /*allow_double=*/false);
  check_cuda_inputs(in);
  at::Tensor go, gphi;
  prepare_grads(in, grad_out, grad_phi, go, gphi);
  at::Tensor grad_u = at::empty_like(in.u), grad_du = at::empty_like(in.du);
  at::Tensor grad_dp = in.du_prev.defined() ? at::empty_like(in.du_prev) : at::empty({0}, u.options());
  at::Tensor grad_pp = in.phi_prev.defined() ? at::empty_like(in.phi_prev)
                                             : at::empty({0}, u.options().dtype(at::kFloat));
  if (in.rows > 0) {
    const Params<float> p = cast_params<float>(Params<double>{alpha, tau, beta, w1, w2, eps});
    const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
    dispatch_dtypes(in, [&](auto types) {
      using TU = typename decltype(types)::TU;
      using TD = typename decltype(types)::TD;
      const RowPtrs<TU, TD> ptrs = row_ptrs<TU, TD>(in);
      const GradPtrs<TU, TD> gr{go.const_data_ptr<TU>(), gphi.const_data_ptr<float>(),
                                grad_u.mutable_data_ptr<TU>(), grad_du.mutable_data_ptr<TD>(),
                                in.du_prev.defined() ? grad_dp.mutable_data_ptr<TD>() : nullptr,
                                in.phi_prev.defined() ? grad_pp.mutable_data_ptr<float>() : nullptr};
      const bool vec_ok = row_ptrs_aligned(ptrs) && aligned16(gr.grad_out) &&
                          aligned16(gr.grad_u) && aligned16(gr.grad_du) &&
                          (gr.grad_dp == nullptr || aligned16(gr.grad_dp));
      dispatch_config<TD>(in.rows, in.D, vec_ok,
                          BackwardLaunch<TU, TD>{ptrs, gr, in.rows, static_cast<int>(in.D), p, stream});
    });
  }
  if (phi_prev.has_value() && phi_prev->defined())
    grad_pp = grad_pp.to(phi_prev->scalar_type());
  return {grad_u, grad_du, grad_dp, grad_pp};
}

}  // namespace

TORCH_LIBRARY_IMPL(apt, CUDA, m) {
  m.impl("left_spin_residual", &forward_cuda);
  m.impl("left_spin_residual_backward", &backward_cuda);
}

}  // namespace apt::left_spin
