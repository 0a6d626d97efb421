#pragma once
/// \file
/// 16-byte vectors of the GCC / Clang vector extension (an SSE or NEON register; wider targets
/// split nothing): the host ops and collectives compute four floats or two doubles at a time with
/// them where `-O2` would not vectorise a loop of unknown length. `lanes_of<T>` picks the vector
/// for float or double.

#include <cstdint>
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

}  // namespace tpx::inline v0::host::simd
