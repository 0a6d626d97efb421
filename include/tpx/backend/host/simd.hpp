#pragma once
/// \file
/// 16-byte vectors of the GCC / Clang vector extension (an SSE or NEON register; wider targets
/// split nothing): the host ops and collectives compute four floats or two doubles at a time with
/// them where `-O2` would not vectorise a loop of unknown length. `lanes_of<T>` picks the vector
/// for float or double; `exp_nonpositive` and `sigmoid` are the float functions the softmax and
/// SwiGLU need, `load` / `store` move the 1 … 4 floats of a row's tail, `widen` eight bf16 values
/// into two float vectors.

#include <cstdint>
#include <cstring>
#include <type_traits>

namespace tpx::inline v0::host::simd {

using f32x4 = float __attribute__((vector_size(16)));
using f64x2 = double __attribute__((vector_size(16)));
using i32x4 = std::int32_t __attribute__((vector_size(16)));
using u16x8 = std::uint16_t __attribute__((vector_size(16)));

/// The 16-byte vector of T (float or double).
template <class T>
using lanes_of = std::conditional_t<std::is_same_v<T, float>, f32x4, f64x2>;

/// Elements of T in one vector.
template <class T>
inline constexpr int width = static_cast<int>(16 / sizeof(T));

/// e^x for x ≤ 0, four at a time: x = n·ln 2 + y with |y| ≤ ln 2 / 2, e^y by its Taylor series
/// to degree 7 (truncation < 1e-8), 2^n from the exponent bits; below −87 (where e^x underflows
/// float's normal range) it is e^−87. Relative error about 1e-7, float rounding's order.
inline f32x4 exp_nonpositive(f32x4 x) {
  const f32x4 floor_value = f32x4{} - 87.0f;
  const i32x4 low = x < floor_value;
  x = reinterpret_cast<f32x4>((reinterpret_cast<i32x4>(x) & ~low) |
                              (reinterpret_cast<i32x4>(floor_value) & low));
  const f32x4 t = x * 1.44269504088896341f;                  // x / ln 2
  const i32x4 n = __builtin_convertvector(t - 0.5f, i32x4);  // round(t) for t ≤ 0
  const f32x4 y = (t - __builtin_convertvector(n, f32x4)) * 0.693147180559945309f;
  const f32x4 p =
      ((((((y * (1.0f / 5040) + 1.0f / 720) * y + 1.0f / 120) * y + 1.0f / 24) * y + 1.0f / 6) * y +
        0.5f) *
           y +
       1.0f) *
          y +
      1.0f;
  return p * reinterpret_cast<f32x4>((n + 127) << 23);
}

/// The logistic sigmoid 1 / (1 + e^−x), four at a time, through e^−|x| (never overflows):
/// 1 / (1 + e^−x) for x ≥ 0, e^x / (1 + e^x) below.
inline f32x4 sigmoid(f32x4 x) {
  const i32x4 negative = x < 0.0f;
  const f32x4 magnitude = reinterpret_cast<f32x4>(reinterpret_cast<i32x4>(x) & 0x7fffffff);  // |x|
  const f32x4 e = exp_nonpositive(-magnitude);
  const f32x4 one = f32x4{} + 1.0f;
  const f32x4 numerator = reinterpret_cast<f32x4>((reinterpret_cast<i32x4>(e) & negative) |
                                                  (reinterpret_cast<i32x4>(one) & ~negative));
  return numerator / (one + e);
}

/// The first n ≤ 4 floats at p in a vector (the other lanes 0).
inline f32x4 load(const float* p, std::int64_t n) {
  f32x4 v{};
  if (n == 4)
    std::memcpy(&v, p, sizeof v);
  else
    for (std::int64_t u = 0; u < n; ++u) v[u] = p[u];
  return v;
}
/// Stores the first n ≤ 4 lanes of v at p.
inline void store(float* p, std::int64_t n, f32x4 v) {
  if (n == 4)
    std::memcpy(p, &v, sizeof v);
  else
    for (std::int64_t u = 0; u < n; ++u) p[u] = v[u];
}

/// The eight bf16 values at p (their bits; any alignment) as floats: lanes 0-3 in `lo`, 4-7 in
/// `hi` (bf16's bits are a float's top half).
inline void widen(const void* p, f32x4& lo, f32x4& hi) {
  u16x8 v;
  std::memcpy(&v, p, sizeof v);
  const u16x8 zero{};
  lo = reinterpret_cast<f32x4>(__builtin_shufflevector(zero, v, 0, 8, 1, 9, 2, 10, 3, 11));
  hi = reinterpret_cast<f32x4>(__builtin_shufflevector(zero, v, 4, 12, 5, 13, 6, 14, 7, 15));
}

inline float sum(f32x4 v) { return (v[0] + v[1]) + (v[2] + v[3]); }

/// Σ_l x[l] · w[l] over n floats x and n weights w (float, or bf16 widened as they are read):
/// four independent accumulators sixteen at a time, which streams one row of a weight at the
/// memory's speed; the tail one at a time.
template <class W>
float dot(const float* x, const W* w, std::int64_t n) {
  static_assert(std::is_same_v<W, float> || sizeof(W) == 2, "simd::dot: float or bf16 weights");
  f32x4 a0{}, a1{}, a2{}, a3{}, w0, w1, w2, w3, x0, x1, x2, x3;
  std::int64_t l = 0;
  for (; l + 16 <= n; l += 16) {
    if constexpr (std::is_same_v<W, float>) {
      std::memcpy(&w0, w + l, sizeof w0);
      std::memcpy(&w1, w + l + 4, sizeof w1);
      std::memcpy(&w2, w + l + 8, sizeof w2);
      std::memcpy(&w3, w + l + 12, sizeof w3);
    } else {
      widen(w + l, w0, w1);
      widen(w + l + 8, w2, w3);
    }
    std::memcpy(&x0, x + l, sizeof x0);
    std::memcpy(&x1, x + l + 4, sizeof x1);
    std::memcpy(&x2, x + l + 8, sizeof x2);
    std::memcpy(&x3, x + l + 12, sizeof x3);
    a0 += w0 * x0;
    a1 += w1 * x1;
    a2 += w2 * x2;
    a3 += w3 * x3;
  }
  float t = sum((a0 + a1) + (a2 + a3));
  for (; l < n; ++l) t += x[l] * static_cast<float>(w[l]);
  return t;
}

}  // namespace tpx::inline v0::host::simd
