// The CPU row kernels of the left-spin residual, written once over at::vec::Vectorized and
// compiled per instruction set: the including file defines CPU_CAPABILITY (+ its
// CPU_CAPABILITY_<ISA> macro) and APT_LS_ISA (the namespace) before including this header.
//
// Each row is handled by one thread (rows are split over at::parallel_for), in two passes:
// the sums of squares (and, backward, dot(grad_out, du)), then the element-wise outputs.
// bfloat16/float16 are widened to float32; float64 (for gradcheck) runs in float64.
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

template <typename T>
struct Io {
  using acc_t = std::conditional_t<std::is_same_v<T, double>, double, float>;
  using AVec = Vectorized<acc_t>;
  static constexpr bool kWiden = !std::is_same_v<T, acc_t>;
  static constexpr int kParts = kWiden ? 2 : 1;
  static constexpr int64_t kChunk = Vectorized<T>::size();
  static_assert(!kWiden || kChunk == 2 * AVec::size(), "a reduced-precision vector widens to two");

  // n <= kChunk elements of p (zeros beyond n) -> kParts accumulation vectors.
  static void load(const T* p, int64_t n, AVec (&v)[kParts]) {
    Vectorized<T> x;
    if (n == kChunk) {
      x = Vectorized<T>::loadu(p);
    } else {
      alignas(64) T buf[kChunk];
      std::fill(buf, buf + kChunk, T(0));
      std::memcpy(buf, p, n * sizeof(T));
      x = Vectorized<T>::loadu(buf);
    }
    if constexpr (kWiden) {
      auto halves = at::vec::convert_to_float<T>(x);
      v[0] = std::get<0>(halves);
      v[1] = std::get<1>(halves);
    } else {
      v[0] = x;
    }
  }

  static void store(T* p, int64_t n, const AVec (&v)[kParts]) {
    Vectorized<T> x;
    if constexpr (kWiden) {
      x = at::vec::convert_from_float<T>(v[0], v[1]);
    } else {
      x = v[0];
    }
    if (n == kChunk) {
      x.store(p);
    } else {
      alignas(64) T buf[kChunk];
      x.store(buf);
      std::memcpy(p, buf, n * sizeof(T));
    }
  }

  // sp += c*c and sf += (b - c)^2 for the du_prev chunk c at p (b: the du chunk).
  static void add_prev_sums(const T* p, int64_t n, const AVec (&b)[kParts], AVec (&sp)[kParts],
                            AVec (&sf)[kParts]) {
    AVec c[kParts];
    load(p, n, c);
    for (int k = 0; k < kParts; ++k) {
      sp[k] = at::vec::fmadd(c[k], c[k], sp[k]);
      const AVec f = b[k] - c[k];
      sf[k] = at::vec::fmadd(f, f, sf[k]);
    }
  }

  static acc_t sum(const AVec (&v)[kParts]) {
    alignas(64) acc_t lanes[AVec::size()];
    AVec t = v[0];
    if constexpr (kParts == 2) t = t + v[1];
    t.store(lanes);
    acc_t s = 0;
    for (int64_t i = 0; i < AVec::size(); ++i) s += lanes[i];
    return s;
  }
};

// Rows per parallel_for task: about 16K elements of work each.
inline int64_t grain_rows(int64_t D) {
  return std::max<int64_t>(1, 16384 / D);
}

// The input pointers of one call (du_prev / phi_prev null when absent) and its parameters.
template <typename T>
struct Rows {
  using acc_t = typename Io<T>::acc_t;
  Rows(const Inputs& in, const Params<double>& pd)
      : p(cast_params<acc_t>(pd)),
        u(in.u.const_data_ptr<T>()),
        du(in.du.const_data_ptr<T>()),
        dp(in.du_prev.defined() ? in.du_prev.const_data_ptr<T>() : nullptr),
        pp(in.phi_prev.defined() ? in.phi_prev.const_data_ptr<acc_t>() : nullptr),
        D(in.D),
        has_prev(dp != nullptr),
        has_phi_prev(pp != nullptr) {}
  Params<acc_t> p;
  const T *u, *du, *dp;
  const acc_t* pp;
  int64_t D;
  bool has_prev, has_phi_prev;
};

template <typename T>
void forward_typed(const Inputs& in, const Params<double>& pd, at::Tensor& out, at::Tensor& phi) {
  using IO = Io<T>;
  using acc_t = typename IO::acc_t;
  using AVec = typename IO::AVec;
  constexpr int P = IO::kParts;
  const Rows<T> R(in, pd);
  T* o = out.mutable_data_ptr<T>();
  acc_t* ph = phi.mutable_data_ptr<acc_t>();

  at::parallel_for(0, in.rows, grain_rows(R.D), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const T* ur = R.u + r * R.D;
      const T* dr = R.du + r * R.D;
      const T* pr = R.has_prev ? R.dp + r * R.D : nullptr;
      AVec su[P], sd[P], sp[P], sf[P];
      for (int k = 0; k < P; ++k) su[k] = sd[k] = sp[k] = sf[k] = AVec(acc_t(0));
      for (int64_t i = 0; i < R.D; i += IO::kChunk) {
        const int64_t n = std::min<int64_t>(IO::kChunk, R.D - i);
        AVec a[P], b[P];
        IO::load(ur + i, n, a);
        IO::load(dr + i, n, b);
        for (int k = 0; k < P; ++k) {
          su[k] = at::vec::fmadd(a[k], a[k], su[k]);
          sd[k] = at::vec::fmadd(b[k], b[k], sd[k]);
        }
        if (R.has_prev) IO::add_prev_sums(pr + i, n, b, sp, sf);
      }
      const RowSums<acc_t> sums{IO::sum(su), IO::sum(sd), IO::sum(sp), IO::sum(sf)};
      const RowGate<acc_t> gate =
          row_gate(sums, R.has_prev, R.has_phi_prev, R.has_phi_prev ? R.pp[r] : acc_t(0), R.p);
      ph[r] = gate.phi;
      const AVec g(gate.g);
      T* orow = o + r * R.D;
      for (int64_t i = 0; i < R.D; i += IO::kChunk) {
        const int64_t n = std::min<int64_t>(IO::kChunk, R.D - i);
        AVec a[P], b[P];
        IO::load(ur + i, n, a);
        IO::load(dr + i, n, b);
        for (int k = 0; k < P; ++k) a[k] = at::vec::fmadd(g, b[k], a[k]);
        IO::store(orow + i, n, a);
      }
    }
  });
}

template <typename T>
void backward_typed(const Inputs& in, const Params<double>& pd, const at::Tensor& grad_out,
                    const at::Tensor& grad_phi, at::Tensor& grad_u, at::Tensor& grad_du,
                    at::Tensor& grad_du_prev, at::Tensor& grad_phi_prev) {
  using IO = Io<T>;
  using acc_t = typename IO::acc_t;
  using AVec = typename IO::AVec;
  constexpr int P = IO::kParts;
  const Rows<T> R(in, pd);
  const T* go = grad_out.const_data_ptr<T>();
  const acc_t* gphi = grad_phi.const_data_ptr<acc_t>();
  T* gu = grad_u.mutable_data_ptr<T>();
  T* gdu = grad_du.mutable_data_ptr<T>();
  T* gdp = R.has_prev ? grad_du_prev.mutable_data_ptr<T>() : nullptr;
  acc_t* gpp = R.has_phi_prev ? grad_phi_prev.mutable_data_ptr<acc_t>() : nullptr;

  at::parallel_for(0, in.rows, grain_rows(R.D), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t off = r * R.D;
      AVec su[P], sd[P], sp[P], sf[P], sg[P];
      for (int k = 0; k < P; ++k) su[k] = sd[k] = sp[k] = sf[k] = sg[k] = AVec(acc_t(0));
      for (int64_t i = 0; i < R.D; i += IO::kChunk) {
        const int64_t n = std::min<int64_t>(IO::kChunk, R.D - i);
        AVec a[P], b[P], y[P];
        IO::load(R.u + off + i, n, a);
        IO::load(R.du + off + i, n, b);
        IO::load(go + off + i, n, y);
        for (int k = 0; k < P; ++k) {
          su[k] = at::vec::fmadd(a[k], a[k], su[k]);
          sd[k] = at::vec::fmadd(b[k], b[k], sd[k]);
          sg[k] = at::vec::fmadd(y[k], b[k], sg[k]);
        }
        if (R.has_prev) IO::add_prev_sums(R.dp + off + i, n, b, sp, sf);
      }
      const RowSums<acc_t> sums{IO::sum(su), IO::sum(sd), IO::sum(sp), IO::sum(sf)};
      const RowGrad<acc_t> c = row_grad(sums, IO::sum(sg), gphi[r], R.has_prev, R.has_phi_prev,
                                        R.has_phi_prev ? R.pp[r] : acc_t(0), R.p);
      if (R.has_phi_prev) gpp[r] = c.gphi_prev;
      const AVec g(c.g), cu(c.cu), cdu(c.cdu), cp(c.cp), cdf(c.cdf);
      for (int64_t i = 0; i < R.D; i += IO::kChunk) {
        const int64_t n = std::min<int64_t>(IO::kChunk, R.D - i);
        AVec a[P], b[P], y[P];
        IO::load(R.u + off + i, n, a);
        IO::load(R.du + off + i, n, b);
        IO::load(go + off + i, n, y);
        if (R.has_prev) {
          AVec q[P], oq[P];
          IO::load(R.dp + off + i, n, q);
          for (int k = 0; k < P; ++k) {
            const AVec f = b[k] - q[k];
            oq[k] = cp * q[k] - cdf * f;
            b[k] = at::vec::fmadd(cdu, b[k], at::vec::fmadd(cdf, f, g * y[k]));
          }
          IO::store(gdp + off + i, n, oq);
        } else {
          for (int k = 0; k < P; ++k) b[k] = at::vec::fmadd(cdu, b[k], g * y[k]);
        }
        for (int k = 0; k < P; ++k) a[k] = at::vec::fmadd(cu, a[k], y[k]);
        IO::store(gu + off + i, n, a);
        IO::store(gdu + off + i, n, b);
      }
    }
  });
}

}  // namespace

void forward_rows(const Inputs& in, const Params<double>& p, at::Tensor& out, at::Tensor& phi) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, in.u.scalar_type(),
                                  "left_spin_residual_cpu",
                                  [&] { forward_typed<scalar_t>(in, p, out, phi); });
}

void backward_rows(const Inputs& in, const Params<double>& p, const at::Tensor& grad_out,
                   const at::Tensor& grad_phi, at::Tensor& grad_u, at::Tensor& grad_du,
                   at::Tensor& grad_du_prev, at::Tensor& grad_phi_prev) {
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kBFloat16, at::kHalf, in.u.scalar_type(), "left_spin_residual_backward_cpu", [&] {
        backward_typed<scalar_t>(in, p, grad_out, grad_phi, grad_u, grad_du, grad_du_prev,
                                 grad_phi_prev);
      });
}

}  // namespace apt::left_spin::APT_LS_ISA
