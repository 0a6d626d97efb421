#pragma once
/// \file
/// Version of tpx. Every public name lives in the versioned inline namespace `tpx::v0`, so two
/// incompatible versions linked into one program do not violate the one-definition rule.

#if __cplusplus < 202002L && !(defined(_MSVC_LANG) && _MSVC_LANG >= 202002L)
#error "tpx needs C++20: compile with -std=c++20 (Meson: cpp_std=c++20; CMake: link tpx::tpx, which requires cxx_std_20; with pkg-config, add it beside $(pkg-config --cflags tpx), which names no standard)"
// #error does not stop GCC or Clang; a missing header does, before the C++20 code below them
// would add hundreds of errors to the one sentence above.
#include <tpx-stops-here-compile-with-std-cxx20>
#endif

#if defined(__CUDACC__)
#error "tpx's headers are compiled by the host C++ compiler, not nvcc (whose front end rejects fmt's compile-time format strings): put the code that uses tpx in a .cpp file and link it with your .cu units; a .cu file may include only <tpx/backend/cuda/kernels.hpp> (the kernels' declarations) and, in one unit, <tpx/backend/cuda/kernels.cuh>"
#include <tpx-stops-here-compile-tpx-code-as-cpp>
#endif

#define TPX_VERSION_MAJOR 0
#define TPX_VERSION_MINOR 1
#define TPX_VERSION_PATCH 0
#define TPX_VERSION_STRING "0.1.0"

namespace tpx::inline v0 {
/// The library version as a string, e.g. "0.1.0".
inline constexpr const char* version = TPX_VERSION_STRING;
}  // namespace tpx::inline v0
