#pragma once
/// \file
/// Version of tpx. Every public name lives in the versioned inline namespace `tpx::v0`, so two
/// incompatible versions linked into one program do not violate the one-definition rule.

#define TPX_VERSION_MAJOR 0
#define TPX_VERSION_MINOR 1
#define TPX_VERSION_PATCH 0
#define TPX_VERSION_STRING "0.1.0"

namespace tpx::inline v0 {
/// The library version as a string, e.g. "0.1.0".
inline constexpr const char* version = TPX_VERSION_STRING;
}  // namespace tpx::inline v0
