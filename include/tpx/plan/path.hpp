#pragma once
/// \file
/// Dotted parameter paths (`model.layers.0.self_attn.q_proj.weight`) as plan matching, the name
/// heuristics, the placer and the reports read them.

#include <algorithm>
#include <charconv>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "tpx/core/error.hpp"
#include "tpx/core/extents.hpp"

namespace tpx::inline v0::plan {

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

/// True for a bias: a name ending in `.bias` or `_bias`.
inline bool is_bias(std::string_view name) {
  return name.ends_with(".bias") || name.ends_with("_bias");
}

/// True when `path` is `suffix` or ends with `.` + `suffix` (whole trailing components).
inline bool ends_with_components(std::string_view path, std::string_view suffix) {
  return path == suffix || (path.size() > suffix.size() && path.ends_with(suffix) &&
                            path[path.size() - suffix.size() - 1] == '.');
}

/// Appends `component` to the dotted path `out` (a dot first unless `out` is empty). Built in
/// place: no temporary string, so nothing for GCC 12's -Wrestrict to misread at -O3.
inline void append_component(std::string& out, std::string_view component) {
  if (!out.empty()) out += '.';
  out += component;
}

/// `model.layers.12.mlp.experts.3.w1.weight` → `model.layers.*.mlp.experts.*.w1.weight`.
inline std::string name_pattern(std::string_view name) {
  std::string out;
  for (const std::string_view c : components(name)) append_component(out, all_digits(c) ? "*" : c);
  return out;
}

/// The index an all-digit path component spells, or an error naming `name` when it does not fit
/// 64 bits (a 20-digit layer number).
inline index_t index_of(std::string_view component, std::string_view name) {
  index_t v = 0;
  const auto [end, ec] = std::from_chars(component.data(), component.data() + component.size(), v);
  expect(ec == std::errc() && end == component.data() + component.size(),
         "tensor '{}': the index {} is not a number tpx can hold", name, component);
  return v;
}

/// The numbered layer a tensor belongs to: its first all-digit path component.
inline std::optional<index_t> layer_of(std::string_view name) {
  for (const std::string_view c : components(name))
    if (all_digits(c)) return index_of(c, name);
  return std::nullopt;
}

/// The expert index of a tensor stored per expert (`…experts.7.…`).
inline std::optional<index_t> expert_of(std::string_view name) {
  const std::vector<std::string_view> c = components(name);
  for (std::size_t i = 0; i + 1 < c.size(); ++i)
    if (c[i] == "experts" && all_digits(c[i + 1])) return index_of(c[i + 1], name);
  return std::nullopt;
}

}  // namespace tpx::inline v0::plan
