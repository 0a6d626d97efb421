#pragma once
/// \file
/// A few rows of activations times a weight as stored — C[m × n] = α · X[m × k] · Wᵀ + β · C with
/// W [n × k] in float or bf16 and m ≤ `dots_max_rows` — the GEMM of a decode step. Each row of W
/// is read from memory once and multiplied by every row of X while it is in registers, so the
/// step runs at the speed memory streams the weight (a GEMM would first pack W; OpenBLAS's GEMV
/// reads float at about half that speed).
///
/// Two kernels: `detail::dots_wide`, 32-byte vectors with fused multiply-add, compiled for AVX2 +
/// FMA through a target attribute and chosen at run time where the CPU has both
/// (`wide_dots()`); and `detail::dots_narrow`, one row at a time through `simd::dot` (16-byte
/// vectors, any CPU). `dots_rows()` says how many rows the chosen kernel takes (1 without
/// AVX2: more rows are sgemm's, which beats 16-byte dot products there).

#include <cstdint>
#include <type_traits>

#include "tpx/backend/host/simd.hpp"

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__)) && \
    !defined(__CUDACC__)
#include <immintrin.h>
#define TPX_HOST_WIDE_DOTS 1
#endif

namespace tpx::inline v0::host::simd {

/// The most rows of X one pass over W serves (the wide kernel's accumulators fill the registers
/// at eight).
inline constexpr int dots_max_rows = 8;

/// Whether this CPU runs the wide kernel (AVX2 and FMA), asked once.
inline bool wide_dots() noexcept {
#ifdef TPX_HOST_WIDE_DOTS
  static const bool yes = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return yes;
#else
  return false;
#endif
}

/// The rows of X `dots` takes on this CPU: `dots_max_rows` with the wide kernel, else 1.
inline int dots_rows() noexcept {
  return wide_dots() ? dots_max_rows : 1;
}

/// Where X, W and C lie: X [m × k] (row stride ldx), W [n × k] (ldw), C [m × n] (ldc).
template <class W>
struct dots_args {
  const float* x;
  std::int64_t ldx;
  int m;
  const W* w;
  std::int64_t ldw;
  std::int64_t n, k;
  float* c;
  std::int64_t ldc;
  float alpha = 1.0f, beta = 0.0f;  ///< β = 0 never reads C
};

namespace detail {

inline float scaled(float dot, float alpha, float beta, const float& c) {
  return beta == 0.0f ? alpha * dot : alpha * dot + beta * c;
}

/// One row at a time through `simd::dot` (16-byte vectors): any CPU.
template <class W>
void dots_narrow(const dots_args<W>& a) {
  for (int i = 0; i < a.m; ++i)
    for (std::int64_t j = 0; j < a.n; ++j) {
      float& c = a.c[i * a.ldc + j];
      c = scaled(dot(a.x + i * a.ldx, a.w + j * a.ldw, a.k), a.alpha, a.beta, c);
    }
}

#ifdef TPX_HOST_WIDE_DOTS

/// Eight weights at p as floats (bf16: their bits are a float's top half).
template <class W>
__attribute__((target("avx2,fma"))) inline __m256 load8(const W* p) {
  if constexpr (std::is_same_v<W, float>) {
    return _mm256_loadu_ps(p);
  } else {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  }
}

__attribute__((target("avx2,fma"))) inline float sum8(__m256 v) {
  const __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 t = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(t, _mm_shuffle_ps(t, t, 1)));
}

/// M rows of X against every row of W; U independent accumulators per row (M · U of them, enough
/// to cover the multiply-add's latency), each weight vector loaded once for the M rows.
template <int M, class W>
__attribute__((target("avx2,fma"))) void dots_block(const dots_args<W>& a) {
  constexpr int U = M == 1 ? 4 : M <= 4 ? 2 : 1;
  for (std::int64_t j = 0; j < a.n; ++j) {
    const W* w = a.w + j * a.ldw;
    __m256 acc[M][U];
#pragma GCC unroll 8
    for (int i = 0; i < M; ++i)
#pragma GCC unroll 4
      for (int u = 0; u < U; ++u) acc[i][u] = _mm256_setzero_ps();
    std::int64_t l = 0;
    for (; l + 8 * U <= a.k; l += 8 * U)
#pragma GCC unroll 4
      for (int u = 0; u < U; ++u) {
        const __m256 wv = load8(w + l + 8 * u);
#pragma GCC unroll 8
        for (int i = 0; i < M; ++i)
          acc[i][u] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(a.x + i * a.ldx + l + 8 * u), acc[i][u]);
      }
    for (; l + 8 <= a.k; l += 8) {
      const __m256 wv = load8(w + l);
#pragma GCC unroll 8
      for (int i = 0; i < M; ++i)
        acc[i][0] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(a.x + i * a.ldx + l), acc[i][0]);
    }
#pragma GCC unroll 8
    for (int i = 0; i < M; ++i) {
      __m256 s = acc[i][0];
#pragma GCC unroll 4
      for (int u = 1; u < U; ++u) s = _mm256_add_ps(s, acc[i][u]);
      float t = sum8(s);
      for (std::int64_t r = l; r < a.k; ++r) t += a.x[i * a.ldx + r] * static_cast<float>(w[r]);
      float& c = a.c[i * a.ldc + j];
      c = scaled(t, a.alpha, a.beta, c);
    }
  }
}

/// Every row of X, eight at a time (32-byte vectors, fused multiply-add): AVX2 + FMA only.
template <class W>
void dots_wide(const dots_args<W>& a) {
  dots_args<W> b = a;
  for (int i0 = 0; i0 < a.m; i0 += dots_max_rows) {
    b.m = a.m - i0 < dots_max_rows ? a.m - i0 : dots_max_rows;
    b.x = a.x + i0 * a.ldx;
    b.c = a.c + i0 * a.ldc;
    switch (b.m) {
      case 1:
        dots_block<1>(b);
        break;
      case 2:
        dots_block<2>(b);
        break;
      case 3:
        dots_block<3>(b);
        break;
      case 4:
        dots_block<4>(b);
        break;
      case 5:
        dots_block<5>(b);
        break;
      case 6:
        dots_block<6>(b);
        break;
      case 7:
        dots_block<7>(b);
        break;
      default:
        dots_block<8>(b);
        break;
    }
  }
}

#endif

}  // namespace detail

/// C = α · X · Wᵀ + β · C through the wide kernel where the CPU has it, else the narrow one.
template <class W>
void dots(const dots_args<W>& a) {
  static_assert(std::is_same_v<W, float> || sizeof(W) == 2, "simd::dots: float or bf16 weights");
#ifdef TPX_HOST_WIDE_DOTS
  if (wide_dots()) return detail::dots_wide(a);
#endif
  detail::dots_narrow(a);
}

}  // namespace tpx::inline v0::host::simd
