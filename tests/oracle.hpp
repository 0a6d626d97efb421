#pragma once
// The oracle: the unsharded layer in fp64 on the host, in plain loops that share no code with the
// engines under test.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "tpx/core/extents.hpp"

namespace tpx::test {

/// A dense row-major fp64 matrix.
struct dense {
  index_t rows = 0, cols = 0;
  std::vector<double> v;
  dense() = default;
  dense(index_t r, index_t c) : rows(r), cols(c), v(static_cast<std::size_t>(r * c), 0.0) {}
  double& operator()(index_t i, index_t j) { return v[static_cast<std::size_t>(i * cols + j)]; }
  double operator()(index_t i, index_t j) const {
    return v[static_cast<std::size_t>(i * cols + j)];
  }
};

/// An oracle matrix converted to T, row-major.
template <class T>
std::vector<T> whole(const dense& m) {
  return std::vector<T>(m.v.begin(), m.v.end());
}

/// Deterministic values in [-1, 1) from a seed (splitmix64), the same on every rank.
inline dense random_dense(index_t rows, index_t cols, std::uint64_t seed) {
  dense m(rows, cols);
  for (double& x : m.v) {
    seed += 0x9E3779B97F4A7C15ull;
    std::uint64_t z = seed;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    x = static_cast<double>(z >> 11) / static_cast<double>(1ull << 52) - 1.0;
  }
  return m;
}

/// y = x · Wᵀ + b.
inline dense linear_forward(const dense& x, const dense& w, const std::vector<double>& b) {
  dense y(x.rows, w.rows);
  for (index_t t = 0; t < x.rows; ++t)
    for (index_t o = 0; o < w.rows; ++o) {
      double acc = b.empty() ? 0.0 : b[static_cast<std::size_t>(o)];
      for (index_t i = 0; i < x.cols; ++i) acc += x(t, i) * w(o, i);
      y(t, o) = acc;
    }
  return y;
}

struct linear_grads {
  dense dx, dw;
  std::vector<double> db;
};

/// dx = dy · W, dW = dyᵀ · x, db = Σ_t dy.
inline linear_grads linear_backward(const dense& x, const dense& w, const dense& dy) {
  linear_grads g{dense(x.rows, x.cols), dense(w.rows, w.cols),
                 std::vector<double>(static_cast<std::size_t>(w.rows), 0.0)};
  for (index_t t = 0; t < x.rows; ++t)
    for (index_t o = 0; o < w.rows; ++o) {
      const double d = dy(t, o);
      g.db[static_cast<std::size_t>(o)] += d;
      for (index_t i = 0; i < x.cols; ++i) {
        g.dx(t, i) += d * w(o, i);
        g.dw(o, i) += d * x(t, i);
      }
    }
  return g;
}

/// Causal grouped-query attention, head by head: q [T, nq·d], k and v [T, nkv·d]; query head h
/// attends with KV head (q_offset + h) / group — h / (nq / nkv) for whole groups; a rank's heads
/// that start mid-group give kv_group and q_offset. Returns o [T, nq·d].
struct attention_shape {
  index_t n_heads = 1, n_kv_heads = 1, head_dim = 1;
  index_t kv_group = 0, q_offset = 0;
  index_t group() const { return kv_group > 0 ? kv_group : n_heads / n_kv_heads; }
  index_t kv_of(index_t h) const { return (q_offset + h) / group(); }
};

namespace detail {
/// Softmax probabilities P(i, j), j ≤ i, of one head pair.
inline dense attention_probs(const dense& q, const dense& k, index_t qh, index_t kh, index_t d) {
  const index_t n = q.rows;
  const double scale = 1.0 / std::sqrt(static_cast<double>(d));
  dense p(n, n);
  for (index_t i = 0; i < n; ++i) {
    double top = -INFINITY;
    for (index_t j = 0; j <= i; ++j) {
      double s = 0;
      for (index_t e = 0; e < d; ++e) s += q(i, qh * d + e) * k(j, kh * d + e);
      p(i, j) = s * scale;
      top = std::max(top, p(i, j));
    }
    double sum = 0;
    for (index_t j = 0; j <= i; ++j) sum += p(i, j) = std::exp(p(i, j) - top);
    for (index_t j = 0; j <= i; ++j) p(i, j) /= sum;
  }
  return p;
}
}  // namespace detail

inline dense attention_forward(const dense& q, const dense& k, const dense& v, attention_shape a) {
  const index_t d = a.head_dim;
  dense o(q.rows, a.n_heads * d);
  for (index_t h = 0; h < a.n_heads; ++h) {
    const index_t g = a.kv_of(h);
    const dense p = detail::attention_probs(q, k, h, g, d);
    for (index_t i = 0; i < q.rows; ++i)
      for (index_t j = 0; j <= i; ++j)
        for (index_t e = 0; e < d; ++e) o(i, h * d + e) += p(i, j) * v(j, g * d + e);
  }
  return o;
}

struct attention_grads {
  dense dq, dk, dv;
};

/// Gradients of attention_forward given dO.
inline attention_grads attention_backward(const dense& q, const dense& k, const dense& v,
                                          const dense& dout, attention_shape a) {
  const index_t d = a.head_dim, n = q.rows;
  const double scale = 1.0 / std::sqrt(static_cast<double>(d));
  attention_grads g{dense(n, q.cols), dense(n, k.cols), dense(n, v.cols)};
  for (index_t h = 0; h < a.n_heads; ++h) {
    const index_t kh = a.kv_of(h);
    const dense p = detail::attention_probs(q, k, h, kh, d);
    for (index_t i = 0; i < n; ++i) {
      std::vector<double> dp(static_cast<std::size_t>(i + 1), 0.0);
      double row = 0;  // Σ_j P(i, j) dP(i, j)
      for (index_t j = 0; j <= i; ++j) {
        for (index_t e = 0; e < d; ++e) {
          dp[static_cast<std::size_t>(j)] += dout(i, h * d + e) * v(j, kh * d + e);
          g.dv(j, kh * d + e) += p(i, j) * dout(i, h * d + e);
        }
        row += p(i, j) * dp[static_cast<std::size_t>(j)];
      }
      for (index_t j = 0; j <= i; ++j) {
        const double ds = p(i, j) * (dp[static_cast<std::size_t>(j)] - row) * scale;
        for (index_t e = 0; e < d; ++e) {
          g.dq(i, h * d + e) += ds * k(j, kh * d + e);
          g.dk(j, kh * d + e) += ds * q(i, h * d + e);
        }
      }
    }
  }
  return g;
}

/// RMSNorm per row: y = x / sqrt(mean(x²) + eps) · w.
inline dense rms_norm_forward(const dense& x, const std::vector<double>& w, double eps) {
  dense y(x.rows, x.cols);
  for (index_t t = 0; t < x.rows; ++t) {
    double ss = 0;
    for (index_t j = 0; j < x.cols; ++j) ss += x(t, j) * x(t, j);
    const double r = 1.0 / std::sqrt(ss / static_cast<double>(x.cols) + eps);
    for (index_t j = 0; j < x.cols; ++j) y(t, j) = x(t, j) * r * w[static_cast<std::size_t>(j)];
  }
  return y;
}

struct norm_grads {
  dense dx;
  std::vector<double> dw;
};

/// Gradients of rms_norm_forward, written from the chain rule over s = Σ x², r = (s/n + eps)^-½.
inline norm_grads rms_norm_backward(const dense& x, const std::vector<double>& w, double eps,
                                    const dense& dy) {
  norm_grads g{dense(x.rows, x.cols), std::vector<double>(static_cast<std::size_t>(x.cols), 0.0)};
  const double n = static_cast<double>(x.cols);
  for (index_t t = 0; t < x.rows; ++t) {
    double s = 0;
    for (index_t j = 0; j < x.cols; ++j) s += x(t, j) * x(t, j);
    const double r = 1.0 / std::sqrt(s / n + eps);
    double dr = 0;  // d loss / d r
    for (index_t j = 0; j < x.cols; ++j) {
      g.dw[static_cast<std::size_t>(j)] += dy(t, j) * x(t, j) * r;
      dr += dy(t, j) * x(t, j) * w[static_cast<std::size_t>(j)];
    }
    const double ds = dr * (-0.5) * r * r * r / n;  // dr/ds = -½ (s/n + eps)^-3/2 / n
    for (index_t j = 0; j < x.cols; ++j)
      g.dx(t, j) = dy(t, j) * w[static_cast<std::size_t>(j)] * r + ds * 2.0 * x(t, j);
  }
  return g;
}

/// Rows of the table W [V, H] for each id.
inline dense embedding_forward(const dense& w, const std::vector<std::int64_t>& ids) {
  dense y(static_cast<index_t>(ids.size()), w.cols);
  for (index_t t = 0; t < y.rows; ++t)
    for (index_t j = 0; j < w.cols; ++j) y(t, j) = w(ids[static_cast<std::size_t>(t)], j);
  return y;
}

/// dW [V, H] of embedding_forward.
inline dense embedding_backward(index_t vocab, const std::vector<std::int64_t>& ids,
                                const dense& dy) {
  dense dw(vocab, dy.cols);
  for (index_t t = 0; t < dy.rows; ++t)
    for (index_t j = 0; j < dy.cols; ++j) dw(ids[static_cast<std::size_t>(t)], j) += dy(t, j);
  return dw;
}

struct cross_entropy_result {
  double loss = 0;
  dense dlogits;
};

/// Mean cross-entropy over the rows whose target is not `ignore`, and its gradient.
inline cross_entropy_result cross_entropy(const dense& logits,
                                          const std::vector<std::int64_t>& targets,
                                          std::int64_t ignore) {
  cross_entropy_result r{0.0, dense(logits.rows, logits.cols)};
  index_t valid = 0;
  for (const std::int64_t t : targets) valid += t != ignore;
  for (index_t t = 0; t < logits.rows; ++t) {
    const std::int64_t target = targets[static_cast<std::size_t>(t)];
    if (target == ignore) continue;
    double top = -INFINITY, sum = 0;
    for (index_t j = 0; j < logits.cols; ++j) top = std::max(top, logits(t, j));
    for (index_t j = 0; j < logits.cols; ++j) sum += std::exp(logits(t, j) - top);
    r.loss += (std::log(sum) + top - logits(t, target)) / static_cast<double>(valid);
    for (index_t j = 0; j < logits.cols; ++j)
      r.dlogits(t, j) = (std::exp(logits(t, j) - top) / sum - (j == target ? 1.0 : 0.0)) /
                        static_cast<double>(valid);
  }
  return r;
}

/// A mixture-of-experts layer: router [E, H]; per expert gate_up [2I, H] (gate rows, then up
/// rows) and down [H, I]; an optional shared expert of the same form (shared_inter > 0).
struct moe_weights {
  dense router;
  std::vector<dense> gate_up, down;
  dense shared_gate_up, shared_down;
  dense shared_gate;  ///< [1, H]: the shared expert scaled by σ(x · g) (Qwen2-MoE); 0 rows: none
  index_t inter = 0, shared_inter = 0;
};

struct moe_routing {
  index_t top_k = 1;
  bool sigmoid = false;
  bool renormalize = true;
  double scale = 1.0;
  std::vector<double> selection_bias = {};  // [E] or empty
};

struct moe_result {
  dense y, dx, drouter;
  std::vector<dense> dgate_up, ddown;
  dense dshared_gate_up, dshared_down, dshared_gate;
};

namespace detail {
inline double sigmoid(double v) {
  return 1.0 / (1.0 + std::exp(-v));
}
inline double silu(double v) {
  return v * sigmoid(v);
}
inline double silu_grad(double v) {
  return sigmoid(v) + v * sigmoid(v) * (1.0 - sigmoid(v));
}

/// One SwiGLU expert on one token, forward, and backward accumulating into the gradients.
struct expert_pass {
  std::vector<double> g, u, o;
  expert_pass(const dense& gu, const dense& dn, const dense& x, index_t t, index_t inter) {
    g.assign(static_cast<std::size_t>(inter), 0.0);
    u.assign(static_cast<std::size_t>(inter), 0.0);
    for (index_t i = 0; i < inter; ++i)
      for (index_t c = 0; c < x.cols; ++c) {
        g[static_cast<std::size_t>(i)] += gu(i, c) * x(t, c);
        u[static_cast<std::size_t>(i)] += gu(inter + i, c) * x(t, c);
      }
    o.assign(static_cast<std::size_t>(dn.rows), 0.0);
    for (index_t h = 0; h < dn.rows; ++h)
      for (index_t i = 0; i < inter; ++i)
        o[static_cast<std::size_t>(h)] +=
            dn(h, i) * silu(g[static_cast<std::size_t>(i)]) * u[static_cast<std::size_t>(i)];
  }
  /// Backward of out = scale · expert(x_t) given d out; adds to dx row t, dgu, ddn.
  void backward(const dense& gu, const dense& dn, const dense& x, index_t t, index_t inter,
                const std::vector<double>& dout, dense& dx, dense& dgu, dense& ddn) const {
    for (index_t i = 0; i < inter; ++i) {
      const double gi = g[static_cast<std::size_t>(i)], ui = u[static_cast<std::size_t>(i)];
      double da = 0;
      for (index_t h = 0; h < dn.rows; ++h) {
        da += dn(h, i) * dout[static_cast<std::size_t>(h)];
        ddn(h, i) += dout[static_cast<std::size_t>(h)] * silu(gi) * ui;
      }
      const double dg = da * ui * silu_grad(gi), du = da * silu(gi);
      for (index_t c = 0; c < x.cols; ++c) {
        dx(t, c) += dg * gu(i, c) + du * gu(inter + i, c);
        dgu(i, c) += dg * x(t, c);
        dgu(inter + i, c) += du * x(t, c);
      }
    }
  }
};
}  // namespace detail

namespace detail {
/// Token t through its chosen experts with weights wt, and the shared expert: adds to out's y, dx
/// and expert gradients; returns d(loss)/d wt for the loss Σ y ⊙ dy.
template <class Result>
std::vector<double> experts_token(const dense& x, const moe_weights& w, index_t t,
                                  const std::vector<index_t>& chosen, const std::vector<double>& wt,
                                  const dense& dy, Result& out) {
  const index_t hidden = x.cols;
  std::vector<double> dweight(chosen.size(), 0.0);
  for (std::size_t j = 0; j < chosen.size(); ++j) {
    const auto e = static_cast<std::size_t>(chosen[j]);
    const expert_pass pass(w.gate_up[e], w.down[e], x, t, w.inter);
    std::vector<double> dout(static_cast<std::size_t>(hidden));
    for (index_t h = 0; h < hidden; ++h) {
      out.y(t, h) += wt[j] * pass.o[static_cast<std::size_t>(h)];
      dweight[j] += dy(t, h) * pass.o[static_cast<std::size_t>(h)];
      dout[static_cast<std::size_t>(h)] = wt[j] * dy(t, h);
    }
    pass.backward(w.gate_up[e], w.down[e], x, t, w.inter, dout, out.dx, out.dgate_up[e],
                  out.ddown[e]);
  }
  if (w.shared_inter > 0) {
    const expert_pass pass(w.shared_gate_up, w.shared_down, x, t, w.shared_inter);
    // A gate scales the expert by s = σ(x_t · g): d o = s · dy, d logit = (dy · o) s (1 − s).
    const bool gated = w.shared_gate.rows > 0;
    double logit = 0, ds = 0;
    if (gated)
      for (index_t c = 0; c < hidden; ++c) logit += w.shared_gate(0, c) * x(t, c);
    const double s = gated ? sigmoid(logit) : 1.0;
    std::vector<double> dout(static_cast<std::size_t>(hidden));
    for (index_t h = 0; h < hidden; ++h) {
      out.y(t, h) += s * pass.o[static_cast<std::size_t>(h)];
      dout[static_cast<std::size_t>(h)] = s * dy(t, h);
      ds += dy(t, h) * pass.o[static_cast<std::size_t>(h)];
    }
    pass.backward(w.shared_gate_up, w.shared_down, x, t, w.shared_inter, dout, out.dx,
                  out.dshared_gate_up, out.dshared_down);
    if (gated) {
      const double dlogit = ds * s * (1 - s);
      for (index_t c = 0; c < hidden; ++c) {
        out.dshared_gate(0, c) += dlogit * x(t, c);
        out.dx(t, c) += dlogit * w.shared_gate(0, c);
      }
    }
  }
  return dweight;
}

template <class Result>
Result empty_result(const dense& x, const moe_weights& w, index_t extra_rows, index_t extra_cols) {
  Result out{dense(x.rows, x.cols),
             dense(x.rows, x.cols),
             dense(extra_rows, extra_cols),
             {},
             {},
             dense(w.shared_gate_up.rows, w.shared_gate_up.cols),
             dense(w.shared_down.rows, w.shared_down.cols),
             dense(w.shared_gate.rows, w.shared_gate.cols)};
  for (std::size_t e = 0; e < w.gate_up.size(); ++e) {
    out.dgate_up.emplace_back(2 * w.inter, x.cols);
    out.ddown.emplace_back(x.cols, w.inter);
  }
  return out;
}
}  // namespace detail

/// The routed experts alone, for given routing: ids [n · k] and weights [n, k];
/// y = Σ_j weights[t, j] · expert_{ids[t, j]}(x_t) + shared(x_t), and every gradient of the loss
/// Σ y ⊙ dy, d weights [n, k] included.
struct experts_result {
  dense y, dx, dweights;
  std::vector<dense> dgate_up, ddown;
  dense dshared_gate_up, dshared_down, dshared_gate;
};
inline experts_result experts(const dense& x, const moe_weights& w,
                              const std::vector<std::int64_t>& ids, const dense& weights,
                              const dense& dy) {
  const index_t k = weights.cols;
  experts_result out = detail::empty_result<experts_result>(x, w, x.rows, k);
  for (index_t t = 0; t < x.rows; ++t) {
    std::vector<index_t> chosen;
    std::vector<double> wt;
    for (index_t j = 0; j < k; ++j) {
      chosen.push_back(ids[static_cast<std::size_t>(t * k + j)]);
      wt.push_back(weights(t, j));
    }
    const std::vector<double> d = detail::experts_token(x, w, t, chosen, wt, dy, out);
    for (index_t j = 0; j < k; ++j) out.dweights(t, j) = d[static_cast<std::size_t>(j)];
  }
  return out;
}

/// y = Σ_j w_tj · expert_{e_tj}(x_t) + shared(x_t), and every gradient for the loss Σ y ⊙ dy.
inline moe_result moe(const dense& x, const moe_weights& w, const moe_routing& r, const dense& dy) {
  const index_t n_exp = w.router.rows, hidden = x.cols, k = r.top_k;
  moe_result out = detail::empty_result<moe_result>(x, w, n_exp, hidden);
  const dense logits = linear_forward(x, w.router, {});
  for (index_t t = 0; t < x.rows; ++t) {
    // Scores, selection and weights.
    std::vector<double> s(static_cast<std::size_t>(n_exp));
    double top = -INFINITY, z = 0;
    for (index_t e = 0; e < n_exp; ++e) top = std::max(top, logits(t, e));
    for (index_t e = 0; e < n_exp; ++e) z += std::exp(logits(t, e) - top);
    for (index_t e = 0; e < n_exp; ++e)
      s[static_cast<std::size_t>(e)] =
          r.sigmoid ? detail::sigmoid(logits(t, e)) : std::exp(logits(t, e) - top) / z;
    std::vector<index_t> chosen;
    std::vector<bool> taken(static_cast<std::size_t>(n_exp), false);
    for (index_t j = 0; j < k; ++j) {  // k passes of "largest remaining, lowest index on ties"
      index_t best = -1;
      for (index_t e = 0; e < n_exp; ++e) {
        if (taken[static_cast<std::size_t>(e)]) continue;
        const double key =
            s[static_cast<std::size_t>(e)] +
            (r.selection_bias.empty() ? 0.0 : r.selection_bias[static_cast<std::size_t>(e)]);
        const double best_key =
            best < 0
                ? -INFINITY
                : s[static_cast<std::size_t>(best)] +
                      (r.selection_bias.empty() ? 0.0
                                                : r.selection_bias[static_cast<std::size_t>(best)]);
        if (best < 0 || key > best_key) best = e;
      }
      taken[static_cast<std::size_t>(best)] = true;
      chosen.push_back(best);
    }
    double denom = 0;
    for (const index_t e : chosen) denom += s[static_cast<std::size_t>(e)];
    if (!r.renormalize) denom = 1.0;
    std::vector<double> wt;
    for (const index_t e : chosen) wt.push_back(r.scale * s[static_cast<std::size_t>(e)] / denom);
    const std::vector<double> dweight = detail::experts_token(x, w, t, chosen, wt, dy, out);
    // Routing backward through the Jacobians: w_j = scale · s_{e_j} / denom.
    std::vector<double> ds(static_cast<std::size_t>(n_exp), 0.0);
    for (index_t j = 0; j < k; ++j)
      for (index_t m = 0; m < k; ++m) {
        const index_t ej = chosen[static_cast<std::size_t>(j)],
                      em = chosen[static_cast<std::size_t>(m)];
        double d = (j == m ? 1.0 : 0.0) / denom;
        if (r.renormalize) d -= s[static_cast<std::size_t>(ej)] / (denom * denom);
        ds[static_cast<std::size_t>(em)] += dweight[static_cast<std::size_t>(j)] * r.scale * d;
      }
    for (index_t f = 0; f < n_exp; ++f) {
      double dl = 0;
      if (r.sigmoid) {
        const double sf = s[static_cast<std::size_t>(f)];
        dl = ds[static_cast<std::size_t>(f)] * sf * (1.0 - sf);
      } else {
        for (index_t e = 0; e < n_exp; ++e)
          dl += ds[static_cast<std::size_t>(e)] * s[static_cast<std::size_t>(e)] *
                ((e == f ? 1.0 : 0.0) - s[static_cast<std::size_t>(f)]);
      }
      for (index_t c = 0; c < hidden; ++c) {
        out.drouter(f, c) += dl * x(t, c);
        out.dx(t, c) += dl * w.router(f, c);
      }
    }
  }
  return out;
}

/// RoPE on every head of x [T, heads·d] at positions 0…T−1: features i and i + d/2 of a head
/// rotate by t · theta^(−2i/d); `inverse` rotates back (the backward of the rotation).
inline dense rope(const dense& x, index_t head_dim, double theta, bool inverse = false) {
  dense y = x;
  const index_t half = head_dim / 2;
  for (index_t t = 0; t < x.rows; ++t)
    for (index_t h0 = 0; h0 < x.cols; h0 += head_dim)
      for (index_t i = 0; i < half; ++i) {
        const double angle =
            (inverse ? -1.0 : 1.0) * static_cast<double>(t) *
            std::pow(theta, -2.0 * static_cast<double>(i) / static_cast<double>(head_dim));
        const double a = x(t, h0 + i), b = x(t, h0 + half + i);
        y(t, h0 + i) = a * std::cos(angle) - b * std::sin(angle);
        y(t, h0 + half + i) = a * std::sin(angle) + b * std::cos(angle);
      }
  return y;
}

/// A pre-norm decoder layer: attention (q, k, v, o with RoPE, causal GQA) and either a SwiGLU MLP
/// (gate_up [2I, H] gate rows then up rows, down [H, I]) or a mixture of experts.
struct block_weights {
  std::vector<double> norm1, norm2;
  dense q, k, v, o;
  attention_shape heads;
  double eps = 1e-6, theta = 10000.0;
  bool moe = false;
  dense gate_up, down;  // dense MLP
  index_t inter = 0;
  moe_weights experts;  // MoE
  moe_routing routing;
};

struct block_result {
  dense y, dx;
  std::vector<double> dnorm1, dnorm2;
  dense dq, dk, dv, dout;
  dense dgate_up, ddown;  // dense MLP
  moe_result experts;     // MoE
};

inline block_result decoder_layer(const dense& x, const block_weights& w, const dense& dy) {
  block_result r;
  const index_t d = w.heads.head_dim;
  const dense n1 = rms_norm_forward(x, w.norm1, w.eps);
  const dense q = linear_forward(n1, w.q, {}), k = linear_forward(n1, w.k, {}),
              v = linear_forward(n1, w.v, {});
  const dense qr = rope(q, d, w.theta), kr = rope(k, d, w.theta);
  const dense att = attention_forward(qr, kr, v, w.heads);
  dense h = linear_forward(att, w.o, {});
  for (std::size_t i = 0; i < h.v.size(); ++i) h.v[i] += x.v[i];
  const dense n2 = rms_norm_forward(h, w.norm2, w.eps);
  dense dn2(x.rows, x.cols);
  r.y = h;
  if (w.moe) {
    r.experts = moe(n2, w.experts, w.routing, dy);
    for (std::size_t i = 0; i < r.y.v.size(); ++i) r.y.v[i] += r.experts.y.v[i];
    dn2 = r.experts.dx;
  } else {
    r.dgate_up = dense(w.gate_up.rows, w.gate_up.cols);
    r.ddown = dense(w.down.rows, w.down.cols);
    for (index_t t = 0; t < x.rows; ++t) {
      const detail::expert_pass pass(w.gate_up, w.down, n2, t, w.inter);
      std::vector<double> dout(static_cast<std::size_t>(x.cols));
      for (index_t c = 0; c < x.cols; ++c) {
        r.y(t, c) += pass.o[static_cast<std::size_t>(c)];
        dout[static_cast<std::size_t>(c)] = dy(t, c);
      }
      pass.backward(w.gate_up, w.down, n2, t, w.inter, dout, dn2, r.dgate_up, r.ddown);
    }
  }
  const norm_grads g2 = rms_norm_backward(h, w.norm2, w.eps, dn2);
  r.dnorm2 = g2.dw;
  dense dh = g2.dx;
  for (std::size_t i = 0; i < dh.v.size(); ++i) dh.v[i] += dy.v[i];
  const linear_grads go = linear_backward(att, w.o, dh);
  r.dout = go.dw;
  const attention_grads ga = attention_backward(qr, kr, v, go.dx, w.heads);
  const linear_grads gq = linear_backward(n1, w.q, rope(ga.dq, d, w.theta, true));
  const linear_grads gk = linear_backward(n1, w.k, rope(ga.dk, d, w.theta, true));
  const linear_grads gv = linear_backward(n1, w.v, ga.dv);
  r.dq = gq.dw, r.dk = gk.dw, r.dv = gv.dw;
  dense dn1 = gq.dx;
  for (std::size_t i = 0; i < dn1.v.size(); ++i) dn1.v[i] += gk.dx.v[i] + gv.dx.v[i];
  const norm_grads g1 = rms_norm_backward(x, w.norm1, w.eps, dn1);
  r.dnorm1 = g1.dw;
  r.dx = g1.dx;
  for (std::size_t i = 0; i < r.dx.v.size(); ++i) r.dx.v[i] += dh.v[i];
  return r;
}

}  // namespace tpx::test
