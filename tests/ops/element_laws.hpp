#pragma once
// The element ops' laws, for any platform of the test harnesses (host_platform, cuda_platform):
// every member of `ops::element_ops` against an fp64 oracle written here from each member's
// definition, on views with a leading dimension past their columns, for shapes with no rows, one
// row, and more columns than a GPU block has threads; and two laws that need no oracle — spread
// and combine are adjoint, and the gradients (RMSNorm, SwiGLU) agree with central differences of
// their forwards. Each check names its member.

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "../harness.hpp"
#include "tpx/core/tensor_view.hpp"

namespace tpx::test::laws {

/// A [rows × cols] matrix in the platform's memory, rows `ld` ≥ cols apart.
template <class P, class T>
struct strided {
  typename P::template buffer<T> buf;
  index_t rows = 0, cols = 0, ld = 1;

  matrix_view<T> view() { return tensor_view<T, 2>(buf.data(), {{rows, cols}}, ld); }
  matrix_view<const T> cview() const {
    return tensor_view<const T, 2>(buf.data(), {{rows, cols}}, ld);
  }
  /// Back on the host, row-major [rows × cols], in double.
  std::vector<double> values() const {
    const std::vector<T> all =
        P::template load<T>(std::span<const T>(buf.data(), static_cast<std::size_t>(rows * ld)));
    std::vector<double> out;
    for (index_t r = 0; r < rows; ++r)
      for (index_t c = 0; c < cols; ++c)
        out.push_back(static_cast<double>(all[static_cast<std::size_t>(r * ld + c)]));
    return out;
  }
};

/// `v` (row-major [rows × cols]) stored with 3 padding columns, which hold NaN.
template <class P, class T>
strided<P, T> store(const std::vector<double>& v, index_t rows, index_t cols) {
  const index_t ld = cols + 3;
  std::vector<T> host(static_cast<std::size_t>(std::max<index_t>(rows * ld, 1)),
                      static_cast<T>(NAN));
  for (index_t r = 0; r < rows; ++r)
    for (index_t c = 0; c < cols; ++c)
      host[static_cast<std::size_t>(r * ld + c)] =
          static_cast<T>(v[static_cast<std::size_t>(r * cols + c)]);
  return {P::store(host), rows, cols, ld};
}
/// An output of [rows × cols], poisoned.
template <class P, class T>
strided<P, T> output(index_t rows, index_t cols) {
  return store<P, T>(std::vector<double>(static_cast<std::size_t>(rows * cols), NAN), rows, cols);
}
/// A vector in the platform's memory.
template <class P, class T>
typename P::template buffer<T> vec(const std::vector<double>& v) {
  std::vector<T> host(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) host[i] = static_cast<T>(v[i]);
  if (host.empty()) host.push_back(T(0));  // a platform buffer of no elements may be null
  return P::store(host);
}
template <class P, class T>
std::vector<double> values(const typename P::template buffer<T>& b, std::size_t n) {
  const std::vector<T> h = P::template load<T>(std::span<const T>(b.data(), n));
  return {h.begin(), h.end()};
}

/// Largest |a − b| over the largest |b| (or 1); NaN counts as infinite.
inline double rel(const std::vector<double>& a, const std::vector<double>& b) {
  if (a.size() != b.size()) return INFINITY;
  double worst = 0, scale = 1;
  for (std::size_t i = 0; i < a.size(); ++i) {
    scale = std::max(scale, std::abs(b[i]));
    const double d = std::abs(a[i] - b[i]);
    worst = std::max(worst, std::isnan(d) ? INFINITY : d);
  }
  return worst / scale;
}

/// The platform's ops for a rank: built from its communicator, as layers build them (the
/// reference, which needs nothing of the rank, by default).
template <class P, class Comm>
auto make_ops(Comm& comm) {
  using ops_type = typename P::backend::ops;
  if constexpr (std::is_constructible_v<ops_type, Comm&>)
    return ops_type(comm);
  else
    return ops_type{};
}

inline double dot(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0;
  for (std::size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

struct shape {
  index_t rows, cols;
};
/// No rows, one row, an odd shape, and more columns than a GPU block's 256 threads.
inline const shape shapes[] = {{0, 5}, {1, 7}, {7, 13}, {3, 300}};

inline std::vector<double> random(index_t n, std::uint64_t seed, double lo = -1, double hi = 1) {
  const dense d = random_dense(std::max<index_t>(n, 1), 1, seed);
  std::vector<double> v(static_cast<std::size_t>(n));
  for (index_t i = 0; i < n; ++i)
    v[static_cast<std::size_t>(i)] = lo + (hi - lo) * (d.v[static_cast<std::size_t>(i)] + 1) / 2;
  return v;
}

// --- the oracle: each member's definition, in double ------------------------------------------

inline double silu(double g) {
  return g / (1 + std::exp(-g));
}

/// The element ops on a platform P in T, each member against the oracle within `tol`.
template <class P, class T>
void check_against_oracle(double tol) {
  P::run(1, [&](auto&, auto& comm) {
    auto o = make_ops<P>(comm);
    for (const shape s : shapes) {
      const index_t n = s.rows, h = s.cols;
      CAPTURE(n);
      CAPTURE(h);
      const std::vector<double> x = random(n * h, 11 + n), w = random(h, 12, 0.5, 1.5),
                                dy = random(n * h, 13 + h);
      const strided<P, T> xs = store<P, T>(x, n, h), dys = store<P, T>(dy, n, h);
      const auto wb = vec<P, T>(w);
      const std::span<const T> wv(wb.data(), static_cast<std::size_t>(h));
      const double eps = 1e-5;

      // RMSNorm: y = x · r ⊙ w; dx = r (dy ⊙ w) − x r³ Σ(dy ⊙ w ⊙ x) / H; dw = Σ_t dy ⊙ x r.
      std::vector<double> y(x.size()), dx(x.size()), dw(static_cast<std::size_t>(h), 0.0);
      for (index_t t = 0; t < n; ++t) {
        double ss = 0, d = 0;
        for (index_t j = 0; j < h; ++j) ss += x[t * h + j] * x[t * h + j];
        const double r = 1 / std::sqrt(ss / h + eps);
        for (index_t j = 0; j < h; ++j) d += dy[t * h + j] * w[j] * x[t * h + j];
        for (index_t j = 0; j < h; ++j) {
          y[t * h + j] = x[t * h + j] * r * w[j];
          dx[t * h + j] = r * dy[t * h + j] * w[j] - x[t * h + j] * r * r * r * d / h;
          dw[j] += dy[t * h + j] * x[t * h + j] * r;
        }
      }
      strided<P, T> ys = output<P, T>(n, h), dxs = output<P, T>(n, h);
      auto dwb = vec<P, T>(std::vector<double>(static_cast<std::size_t>(h), NAN));
      o.rms_norm_forward(xs.cview(), wv, eps, ys.view());
      o.rms_norm_backward(xs.cview(), wv, eps, dys.cview(), dxs.view(),
                          std::span<T>(dwb.data(), static_cast<std::size_t>(h)));
      CHECK_MESSAGE(rel(ys.values(), y) < tol, "rms_norm_forward");
      CHECK_MESSAGE(rel(dxs.values(), dx) < tol, "rms_norm_backward: dx");
      CHECK_MESSAGE(rel(values<P, T>(dwb, static_cast<std::size_t>(h)), dw) < tol,
                    "rms_norm_backward: dw");

      // SwiGLU of [gate | up] (h columns: gate h/2, up h/2; an odd h leaves the last column out).
      const index_t i = h / 2;
      std::vector<double> a(static_cast<std::size_t>(n * i)), da = random(n * i, 14);
      std::vector<double> dh(static_cast<std::size_t>(n * 2 * i));
      for (index_t t = 0; t < n; ++t)
        for (index_t j = 0; j < i; ++j) {
          const double g = x[t * h + j], u = x[t * h + i + j], s = 1 / (1 + std::exp(-g));
          a[t * i + j] = silu(g) * u;
          dh[t * 2 * i + j] = da[t * i + j] * u * s * (1 + g * (1 - s));
          dh[t * 2 * i + i + j] = da[t * i + j] * silu(g);
        }
      const matrix_view<const T> hv = xs.cview().col_range(0, 2 * i);
      strided<P, T> as = output<P, T>(n, i), dhs = output<P, T>(n, 2 * i);
      const strided<P, T> das = store<P, T>(da, n, i);
      o.swiglu_forward(hv, as.view());
      o.swiglu_backward(hv, das.cview(), dhs.view());
      CHECK_MESSAGE(rel(as.values(), a) < tol, "swiglu_forward");
      CHECK_MESSAGE(rel(dhs.values(), dh) < tol, "swiglu_backward");

      // add and copy.
      strided<P, T> sum = store<P, T>(x, n, h), copied = output<P, T>(n, h);
      o.add(sum.view(), dys.cview());
      o.copy(xs.cview(), copied.view());
      std::vector<double> x_plus_dy(x.size());
      for (std::size_t e = 0; e < x.size(); ++e) x_plus_dy[e] = x[e] + dy[e];
      CHECK_MESSAGE(rel(sum.values(), x_plus_dy) < tol, "add");
      CHECK_MESSAGE(rel(copied.values(), xs.values()) == 0, "copy");

      // Embedding over vocab rows [first, first + rows) of a table [rows × h]: ids inside, below
      // and above the slice, repeated.
      const index_t table_rows = 5, first = 3;
      const std::vector<double> table = random(table_rows * h, 15);
      std::vector<std::int64_t> ids;
      for (index_t t = 0; t < n; ++t) ids.push_back((t * 3) % 10);
      std::vector<double> emb(static_cast<std::size_t>(n * h), 0.0),
          dtable(static_cast<std::size_t>(table_rows * h), 0.0);
      for (index_t t = 0; t < n; ++t) {
        const index_t row = ids[t] - first;
        if (row < 0 || row >= table_rows) continue;
        for (index_t j = 0; j < h; ++j) {
          emb[t * h + j] = table[row * h + j];
          dtable[row * h + j] += dy[t * h + j];
        }
      }
      const strided<P, T> tab = store<P, T>(table, table_rows, h);
      strided<P, T> es = output<P, T>(n, h);
      strided<P, T> dtab = store<P, T>(
          std::vector<double>(static_cast<std::size_t>(table_rows * h), 0.0), table_rows, h);
      o.embedding_forward(std::span<const std::int64_t>(ids), tab.cview(), first, es.view());
      o.embedding_backward(std::span<const std::int64_t>(ids), dys.cview(), first, dtab.view());
      CHECK_MESSAGE(rel(es.values(), emb) < tol, "embedding_forward");
      CHECK_MESSAGE(rel(dtab.values(), dtable) < tol, "embedding_backward");

      // Cross-entropy pieces over this rank's vocab columns [first, first + h) of logits x.
      const index_t vfirst = 4;
      const std::int64_t ignore = -100;
      std::vector<std::int64_t> targets;
      for (index_t t = 0; t < n; ++t)
        targets.push_back(t % 3 == 2 ? ignore : vfirst + (t * 5) % (h + 3) - 1);
      std::vector<double> mx(static_cast<std::size_t>(n)), sums(static_cast<std::size_t>(2 * n)),
          dl(static_cast<std::size_t>(n * h));
      const double scale = 0.25;
      for (index_t t = 0; t < n; ++t) {
        double m = -INFINITY, s = 0;
        for (index_t j = 0; j < h; ++j) m = std::max(m, x[t * h + j]);
        for (index_t j = 0; j < h; ++j) s += std::exp(x[t * h + j] - m);
        const index_t c = targets[t] - vfirst;
        mx[t] = m, sums[t] = s, sums[n + t] = 0 <= c && c < h ? x[t * h + c] : 0;
        for (index_t j = 0; j < h; ++j)
          dl[t * h + j] =
              targets[t] == ignore
                  ? 0
                  : (std::exp(x[t * h + j] - m) / s - (vfirst + j == targets[t] ? 1 : 0)) * scale;
      }
      auto mb = vec<P, T>(std::vector<double>(static_cast<std::size_t>(n), NAN));
      auto sb = vec<P, T>(std::vector<double>(static_cast<std::size_t>(2 * n), NAN));
      const std::span<T> mspan(mb.data(), static_cast<std::size_t>(n)),
          sspan(sb.data(), static_cast<std::size_t>(2 * n));
      strided<P, T> dls = output<P, T>(n, h);
      o.row_max(xs.cview(), mspan);
      o.cross_entropy_sums(xs.cview(), std::span<const T>(mspan),
                           std::span<const std::int64_t>(targets), vfirst, sspan);
      o.cross_entropy_backward(xs.cview(), std::span<const T>(mspan),
                               std::span<const T>(sspan.first(static_cast<std::size_t>(n))),
                               std::span<const std::int64_t>(targets), vfirst, ignore,
                               static_cast<T>(scale), dls.view());
      CHECK_MESSAGE(rel(values<P, T>(mb, static_cast<std::size_t>(n)), mx) < tol, "row_max");
      CHECK_MESSAGE(rel(values<P, T>(sb, static_cast<std::size_t>(2 * n)), sums) < tol,
                    "cross_entropy_sums");
      CHECK_MESSAGE(rel(dls.values(), dl) < tol, "cross_entropy_backward");

      // Row moves with k = 2 choices per token: some slots −1, the others a permutation of the
      // destination rows; weights w2 [n × 2].
      const index_t k = 2;
      std::vector<index_t> slots(static_cast<std::size_t>(n * k));
      index_t used = 0;
      for (index_t c = 0; c < n * k; ++c) slots[c] = c % 3 == 1 ? -1 : used++;
      std::reverse(slots.begin(), slots.end());  // destinations out of token order
      const std::vector<double> w2 = random(n * k, 16);
      const strided<P, T> w2s = store<P, T>(w2, n, k);
      std::vector<double> spread(static_cast<std::size_t>(used * h), 0.0),
          combined(static_cast<std::size_t>(n * h), 0.0), dots(static_cast<std::size_t>(n * k));
      const std::vector<double> rows_in = random(used * h, 17);
      for (index_t t = 0; t < n; ++t)
        for (index_t j = 0; j < k; ++j) {
          const index_t d = slots[t * k + j];
          dots[t * k + j] = 0;
          if (d < 0) continue;
          for (index_t c = 0; c < h; ++c) {
            spread[d * h + c] = w2[t * k + j] * x[t * h + c];
            combined[t * h + c] += w2[t * k + j] * rows_in[d * h + c];
            dots[t * k + j] += dy[t * h + c] * rows_in[d * h + c];
          }
        }
      std::vector<index_t> from(static_cast<std::size_t>(used + 1));
      std::vector<double> gathered(static_cast<std::size_t>((used + 1) * h), 0.0);
      for (index_t r = 0; r <= used; ++r) {
        from[r] = r == used ? -1 : (r * 7) % used;  // the last row gathers nothing
        for (index_t c = 0; c < h && from[r] >= 0; ++c)
          gathered[r * h + c] = rows_in[from[r] * h + c];
      }
      const strided<P, T> ins = store<P, T>(rows_in, used, h);
      strided<P, T> sp = output<P, T>(used, h), co = output<P, T>(n, h),
                    ga = output<P, T>(used + 1, h), dt = output<P, T>(n, k);
      o.spread_rows(xs.cview(), std::span<const index_t>(slots), k, w2s.cview(), sp.view());
      o.combine_rows(ins.cview(), std::span<const index_t>(slots), k, w2s.cview(), co.view());
      o.gather_rows(ins.cview(), std::span<const index_t>(from), ga.view());
      o.row_dots(dys.cview(), ins.cview(), std::span<const index_t>(slots), dt.view());
      CHECK_MESSAGE(rel(sp.values(), spread) < tol, "spread_rows");
      CHECK_MESSAGE(rel(co.values(), combined) < tol, "combine_rows");
      CHECK_MESSAGE(rel(ga.values(), gathered) < tol, "gather_rows");
      CHECK_MESSAGE(rel(dt.values(), dots) < tol, "row_dots");

      // To and from the host.
      std::vector<T> host_x(static_cast<std::size_t>(n * h));
      o.copy_to_host(xs.cview(), make_matrix(host_x.data(), n, h));
      strided<P, T> back = output<P, T>(n, h);
      o.copy_from_host(make_matrix<const T>(host_x.data(), n, h), back.view());
      CHECK_MESSAGE(rel(back.values(), xs.values()) == 0, "copy_to_host, copy_from_host");
    }
  });
}

/// Laws without an oracle, in double: spread_rows and combine_rows are adjoint
/// (⟨spread(x), D⟩ = ⟨x, combine(D)⟩ with the same slots and weights), and the backward of
/// RMSNorm and SwiGLU is the derivative of their forward (central differences along a random
/// direction).
template <class P>
void check_adjoint_and_gradients() {
  using T = double;
  P::run(1, [&](auto&, auto& comm) {
    auto o = make_ops<P>(comm);
    const index_t n = 6, h = 9, k = 3;
    const std::vector<double> x = random(n * h, 21), v = random(n * h, 22),
                              w = random(h, 23, 0.5, 2), dy = random(n * h, 24);
    std::vector<index_t> slots(static_cast<std::size_t>(n * k));
    index_t used = 0;
    for (index_t c = 0; c < n * k; ++c) slots[c] = c % 4 == 3 ? -1 : used++;
    std::rotate(slots.begin(), slots.begin() + 5, slots.end());
    const std::vector<double> wk = random(n * k, 25), big = random(used * h, 26);
    strided<P, T> sp = output<P, T>(used, h), co = output<P, T>(n, h);
    o.spread_rows(store<P, T>(x, n, h).cview(), std::span<const index_t>(slots), k,
                  store<P, T>(wk, n, k).cview(), sp.view());
    o.combine_rows(store<P, T>(big, used, h).cview(), std::span<const index_t>(slots), k,
                   store<P, T>(wk, n, k).cview(), co.view());
    const double lhs = dot(sp.values(), big), rhs = dot(x, co.values());
    CHECK_MESSAGE(std::abs(lhs - rhs) < 1e-12 * std::max(1.0, std::abs(rhs)),
                  "spread_rows and combine_rows are adjoint");

    // ⟨dy, J v⟩ by central differences = ⟨dx, v⟩ from backward.
    const double e = 1e-6;
    const auto along = [&](double s) {
      std::vector<double> p(x.size());
      for (std::size_t i = 0; i < x.size(); ++i) p[i] = x[i] + s * v[i];
      return p;
    };
    const auto wb = vec<P, T>(w);
    const std::span<const T> wv(wb.data(), static_cast<std::size_t>(h));
    const auto norm = [&](const std::vector<double>& at) {
      strided<P, T> y = output<P, T>(n, h);
      o.rms_norm_forward(store<P, T>(at, n, h).cview(), wv, 1e-6, y.view());
      return dot(dy, y.values());
    };
    strided<P, T> dx = output<P, T>(n, h);
    auto dw = vec<P, T>(std::vector<double>(static_cast<std::size_t>(h), 0.0));
    o.rms_norm_backward(store<P, T>(x, n, h).cview(), wv, 1e-6, store<P, T>(dy, n, h).cview(),
                        dx.view(), std::span<T>(dw.data(), static_cast<std::size_t>(h)));
    const double fd = (norm(along(e)) - norm(along(-e))) / (2 * e);
    CHECK_MESSAGE(std::abs(fd - dot(dx.values(), v)) < 1e-6 * std::max(1.0, std::abs(fd)),
                  "rms_norm_backward is the derivative of rms_norm_forward");

    const index_t i = 4;  // h = 2i + 1: the gate|up view leaves a column out
    const std::vector<double> da = random(n * i, 27);
    const auto swiglu = [&](const std::vector<double>& at) {
      strided<P, T> a = output<P, T>(n, i);
      o.swiglu_forward(store<P, T>(at, n, h).cview().col_range(0, 2 * i), a.view());
      return dot(da, a.values());
    };
    strided<P, T> dh = output<P, T>(n, 2 * i);
    o.swiglu_backward(store<P, T>(x, n, h).cview().col_range(0, 2 * i),
                      store<P, T>(da, n, i).cview(), dh.view());
    std::vector<double> v2;  // v's gate|up columns
    for (index_t t = 0; t < n; ++t)
      for (index_t c = 0; c < 2 * i; ++c) v2.push_back(v[t * h + c]);
    const double fd2 = (swiglu(along(e)) - swiglu(along(-e))) / (2 * e);
    CHECK_MESSAGE(std::abs(fd2 - dot(dh.values(), v2)) < 1e-6 * std::max(1.0, std::abs(fd2)),
                  "swiglu_backward is the derivative of swiglu_forward");
  });
}

}  // namespace tpx::test::laws
