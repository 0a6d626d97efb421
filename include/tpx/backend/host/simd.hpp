#pragma once
/// \file
/// 16-byte vectors of the GCC / Clang vector extension (an SSE or NEON register; wider targets
/// split nothing): the host ops and collectives compute four floats or two doubles at a time with
/// them where `-O2` would not vectorise a loop of unknown length. `lanes_of<T>` picks the vector
/// for float or double; `exp_nonpositive` and `sigmoid` are the float functions the softmax and
/// SwiGLU need, `load` / `store` move the 1 … 4 floats of a row's tail.

#include <cstdint>
#include <cstring>
#include <type_traits>

namespace tpx::inline v0::host::simd {

using f32x4 = float __attribute__((vector_size(16)));
using f64x2 = double __attribute__((vector_size(16)));
using i32x4 = std::int32_t __attribute__((vector_size(16)));

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

}  // namespace tpx::inline v0::host::simd
