#pragma once
/// \file
/// Dotted parameter paths (`model.layers.0.self_attn.q_proj.weight`) as plan matching and the
/// name heuristics read them.

#include <algorithm>
#include <string_view>
#include <vector>

#include "tpx/version.hpp"

namespace tpx::inline v0::plan::detail {

/// The components of a dotted path, in order.
inline std::vector<std::string_view> components(std::string_view path) {
  std::vector<std::string_view> out;
  std::size_t at = 0;
  while (true) {
    const std::size_t dot = path.find('.', at);
    out.push_back(path.substr(at, dot == std::string_view::npos ? dot : dot - at));
    if (dot == std::string_view::npos) return out;
    at = dot + 1;
  }
}

/// True for a non-empty run of decimal digits: a layer or expert index.
inline bool all_digits(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

/// The module a parameter belongs to (`a.b.weight` → `a.b`); a parameter with no `.weight` or
/// `.bias` suffix is its own module (`…experts.gate_up_proj`).
inline std::string_view module_of(std::string_view name) {
  if (name.ends_with(".weight") || name.ends_with(".bias")) return name.substr(0, name.rfind('.'));
  return name;
}

/// The last component of a dotted path (the whole path when it has no dot).
inline std::string_view last_component(std::string_view path) {
  const std::size_t dot = path.rfind('.');
  return dot == std::string_view::npos ? path : path.substr(dot + 1);
}

}  // namespace tpx::inline v0::plan::detail
