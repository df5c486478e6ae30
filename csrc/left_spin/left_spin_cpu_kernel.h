// The CPU row kernels of the left-spin residual, written once over at::vec::Vectorized and
// compiled per instruction set: the including file defines CPU_CAPABILITY (+ its
// CPU_CAPABILITY_<ISA> macro) and APT_LS_ISA (the namespace) before including this header.
//
// Each row is handled by one thread (rows are split over at::parallel_for), in two passes:
// the sums of squares (and, backward, dot(grad_out, du)), then the element-wise outputs.
// bfloat16/float16 are widened to float32; float64 (for gradcheck) runs in float64. du and
// du_prev may be bfloat16 / float16 beside a float32 u (their gradients keep their dtype).
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <cstring>
#include <type_traits>

#include "left_spin/left_spin_cpu.h"

namespace apt::left_spin::APT_LS_ISA {
namespace {

using at::vec::Vectorized;

// One step of a row: kChunk = two accumulation vectors of elements. T (an input's dtype) is
// loaded and widened to acc_t (float32; float64 for float64 calls), so inputs of different
// dtypes (a float32 u beside a bfloat16 du) step through a row together.
template <typename T, typename acc_t>
struct Io {
  using AVec = Vectorized<acc_t>;
  static constexpr bool kWiden = !std::is_same_v<T, acc_t>;
  static constexpr int64_t kChunk = 2 * AVec::size();
  static_assert(!kWiden || Vectorized<T>::size() == kChunk, "a reduced-precision vector widens to two");

  // n <= kChunk elements of p (zeros beyond n) -> two accumulation vectors.
  static void load(const T* p, int64_t n, AVec (&v)[2]) {
    if constexpr (kWiden) {
      const auto x = n == kChunk ? Vectorized<T>::loadu(p) : Vectorized<T>::loadu(p, n);
      auto halves = at::vec::convert_to_float<T>(x);
      v[0] = std::get<0>(halves);
      v[1] = std::get<1>(halves);
    } else if (n == kChunk) {
      v[0] = AVec::loadu(p);
      v[1] = AVec::loadu(p + AVec::size());
    } else {
      constexpr int64_t h = AVec::size();
      v[0] = AVec::loadu(p, std::min(n, h));
      v[1] = n > h ? AVec::loadu(p + h, n - h) : AVec(acc_t(0));
    }
  }

  static void store(T* p, int64_t n, const AVec (&v)[2]) {
    if constexpr (kWiden) {
      at::vec::convert_from_float<T>(v[0], v[1]).store(p, static_cast<int>(n));
    } else {
      constexpr int64_t h = AVec::size();
      v[0].store(p, static_cast<int>(std::min(n, h)));
      if (n > h) v[1].store(p + h, static_cast<int>(n - h));
    }
  }

  // sp += c*c and sf += (b - c)^2 for the du_prev chunk c at p (b: the du chunk).
  static void add_prev_sums(const T* p, int64_t n, const AVec (&b)[2], AVec (&sp)[2],
                            AVec (&sf)[2]) {
    AVec c[2];
    load(p, n, c);
    for (int k = 0; k < 2; ++k) {
      sp[k] = at::vec::fmadd(c[k], c[k], sp[k]);
      const AVec f = b[k] - c[k];
      sf[k] = at::vec::fmadd(f, f, sf[k]);
    }
  }
};

template <typename acc_t>
acc_t lane_sum(const Vectorized<acc_t> (&v)[2]) {
  alignas(64) acc_t lanes[Vectorized<acc_t>::size()];
  (v[0] + v[1]).store(lanes);
  acc_t s = 0;
  for (int64_t i = 0; i < Vectorized<acc_t>::size(); ++i) s += lanes[i];
  return s;
}

// Rows per parallel_for task: about 16K elements of work each.
inline int64_t grain_rows(int64_t D) {
  return std::max<int64_t>(1, 16384 / D);
}

// The row kernels for one pair of element types: TU for u, out, grad_out and grad_u; TD for
// du, du_prev and their gradients; math in acc_t, float32 (float64 when u is float64).
template <typename TU, typename TD>
struct RowKernels {
  using acc_t = std::conditional_t<std::is_same_v<TU, double>, double, float>;
  using AVec = Vectorized<acc_t>;
  using IU = Io<TU, acc_t>;
  using ID = Io<TD, acc_t>;
  static constexpr int64_t kChunk = IU::kChunk;
  static_assert(ID::kChunk == kChunk, "u and du step through a row together");

  // The input pointers of one call (du_prev / phi_prev null when absent) and its parameters.
  struct Rows {
    Rows(const Inputs& in, const Params<double>& pd)
        : p(cast_params<acc_t>(pd)),
          u(in.u.const_data_ptr<TU>()),
          du(in.du.const_data_ptr<TD>()),
          dp(in.du_prev.defined() ? in.du_prev.const_data_ptr<TD>() : nullptr),
          pp(in.phi_prev.defined() ? in.phi_prev.const_data_ptr<acc_t>() : nullptr),
          D(in.D),
          has_prev(dp != nullptr),
          has_phi_prev(pp != nullptr) {}
    Params<acc_t> p;
    const TU* u;
    const TD *du, *dp;
    const acc_t* pp;
    int64_t D;
    bool has_prev, has_phi_prev;
  };

  static void forward(const Inputs& in, const Params<double>& pd, at::Tensor& out, at::Tensor& phi) {
    const Rows R(in, pd);
    auto* o = out.mutable_data_ptr<TU>();
    acc_t* ph = phi.mutable_data_ptr<acc_t>();

    at::parallel_for(0, in.rows, grain_rows(R.D), [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const auto* ur = R.u + r * R.D;
        const auto* dr = R.du + r * R.D;
        const auto* pr = R.has_prev ? R.dp + r * R.D : nullptr;
        AVec su[2], sd[2], sp[2], sf[2];
        for (int k = 0; k < 2; ++k) su[k] = sd[k] = sp[k] = sf[k] = AVec(acc_t(0));
        for (int64_t i = 0; i < R.D; i += kChunk) {
          const int64_t n = std::min<int64_t>(kChunk, R.D - i);
          AVec a[2], b[2];
          IU::load(ur + i, n, a);
          ID::load(dr + i, n, b);
          for (int k = 0; k < 2; ++k) {
            su[k] = at::vec::fmadd(a[k], a[k], su[k]);
            sd[k] = at::vec::fmadd(b[k], b[k], sd[k]);
          }
          if (R.has_prev) ID::add_prev_sums(pr + i, n, b, sp, sf);
        }
        const RowSums<acc_t> sums{lane_sum(su), lane_sum(sd), lane_sum(sp), lane_sum(sf)};
        const RowGate<acc_t> gate =
            row_gate(sums, R.has_prev, R.has_phi_prev, R.has_phi_prev ? R.pp[r] : acc_t(0), R.p);
        ph[r] = gate.phi;
        const AVec g(gate.g);
        auto* orow = o + r * R.D;
        for (int64_t i = 0; i < R.D; i += kChunk) {
          const int64_t n = std::min<int64_t>(kChunk, R.D - i);
          AVec a[2], b[2];
          IU::load(ur + i, n, a);
          ID::load(dr + i, n, b);
          for (int k = 0; k < 2; ++k) a[k] = at::vec::fmadd(g, b[k], a[k]);
          IU::store(orow + i, n, a);
        }
      }
    });
  }

  static void backward(const Inputs& in, const Params<double>& pd, const at::Tensor& grad_out,
                       const at::Tensor& grad_phi, at::Tensor& grad_u, at::Tensor& grad_du,
                       at::Tensor& grad_du_prev, at::Tensor& grad_phi_prev) {
    const Rows R(in, pd);
    const TU* go = grad_out.const_data_ptr<TU>();
    const acc_t* gphi = grad_phi.const_data_ptr<acc_t>();
    TU* gu = grad_u.mutable_data_ptr<TU>();
    TD* gdu = grad_du.mutable_data_ptr<TD>();
    TD* gdp = R.has_prev ? grad_du_prev.mutable_data_ptr<TD>() : nullptr;
    acc_t* gpp = R.has_phi_prev ? grad_phi_prev.mutable_data_ptr<acc_t>() : nullptr;

    at::parallel_for(0, in.rows, grain_rows(R.D), [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t off = r * R.D;
        AVec su[2], sd[2], sp[2], sf[2], sg[2];
        for (int k = 0; k < 2; ++k) su[k] = sd[k] = sp[k] = sf[k] = sg[k] = AVec(acc_t(0));
        // u, du and grad_out at columns [i, i + n) of this row.
        auto load_chunk = [&](int64_t i, int64_t n, AVec (&a)[2], AVec (&b)[2], AVec (&y)[2]) {
          IU::load(R.u + off + i, n, a);
          ID::load(R.du + off + i, n, b);
          IU::load(go + off + i, n, y);
        };
        for (int64_t i = 0; i < R.D; i += kChunk) {
          const int64_t n = std::min<int64_t>(kChunk, R.D - i);
          AVec a[2], b[2], y[2];
          load_chunk(i, n, a, b, y);
          for (int k = 0; k < 2; ++k) {
            su[k] = at::vec::fmadd(a[k], a[k], su[k]);
            sd[k] = at::vec::fmadd(b[k], b[k], sd[k]);
            sg[k] = at::vec::fmadd(y[k], b[k], sg[k]);
          }
          if (R.has_prev) ID::add_prev_sums(R.dp + off + i, n, b, sp, sf);
        }
        const RowSums<acc_t> sums{lane_sum(su), lane_sum(sd), lane_sum(sp), lane_sum(sf)};
        const RowGrad<acc_t> c = row_grad(sums, lane_sum(sg), gphi[r], R.has_prev, R.has_phi_prev,
                                          R.has_phi_prev ? R.pp[r] : acc_t(0), R.p);
        if (R.has_phi_prev) gpp[r] = c.gphi_prev;
        const AVec g(c.g), cu(c.cu), cdu(c.cdu), cp(c.cp), cdf(c.cdf);
        for (int64_t i = 0; i < R.D; i += kChunk) {
          const int64_t n = std::min<int64_t>(kChunk, R.D - i);
          AVec a[2], b[2], y[2];
          load_chunk(i, n, a, b, y);
          if (R.has_prev) {
            AVec q[2], oq[2];
            ID::load(R.dp + off + i, n, q);
            for (int k = 0; k < 2; ++k) {
              const AVec f = b[k] - q[k];
              // Explicit FMAs only: left to the compiler, which product it contracts could
              // differ between dtype instantiations (1-ulp differences near cancellation).
              oq[k] = at::vec::fmsub(cp, q[k], cdf * f);
              b[k] = at::vec::fmadd(cdu, b[k], at::vec::fmadd(cdf, f, g * y[k]));
            }
            ID::store(gdp + off + i, n, oq);
          } else {
            for (int k = 0; k < 2; ++k) b[k] = at::vec::fmadd(cdu, b[k], g * y[k]);
          }
          for (int k = 0; k < 2; ++k) a[k] = at::vec::fmadd(cu, a[k], y[k]);
          IU::store(gu + off + i, n, a);
          ID::store(gdu + off + i, n, b);
        }
      }
    });
  }
};

// Calls f(RowKernels<TU, TD>{}) for the call's dtypes: one dtype for all inputs, or a float32 u
// with bfloat16 / float16 du (the only pairs check_inputs lets through).
template <typename F>
void dispatch_types(const Inputs& in, F&& f) {
  const at::ScalarType su = in.u.scalar_type(), sd = in.du.scalar_type();
  if (su == sd) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, su, "left_spin_residual_cpu",
                                    [&] { f(RowKernels<scalar_t, scalar_t>{}); });
  } else if (su == at::kFloat && sd == at::kBFloat16) {
    f(RowKernels<float, c10::BFloat16>{});
  } else if (su == at::kFloat && sd == at::kHalf) {
    f(RowKernels<float, c10::Half>{});
  } else {
    TORCH_CHECK_TYPE(false, "left_spin_residual_cpu: unsupported dtypes u ", su, ", du ", sd);
  }
}

}  // namespace

void forward_rows(const Inputs& in, const Params<double>& p, at::Tensor& out, at::Tensor& phi) {
  dispatch_types(in, [&](auto kernels) { decltype(kernels)::forward(in, p, out, phi); });
}

void backward_rows(const Inputs& in, const Params<double>& p, const at::Tensor& grad_out,
                   const at::Tensor& grad_phi, at::Tensor& grad_u, at::Tensor& grad_du,
                   at::Tensor& grad_du_prev, at::Tensor& grad_phi_prev) {
  dispatch_types(in, [&](auto kernels) {
    decltype(kernels)::backward(in, p, grad_out, grad_phi, grad_u, grad_du, grad_du_prev,
                                grad_phi_prev);
  });
}

}  // namespace apt::left_spin::APT_LS_ISA
