#pragma once
/// \file
/// Name heuristics for models that ship no plan (DeepSpeed AutoTP's rules, REFERENCE.md §2):
/// inside a numbered block, a linear whose module name ends in one of the row-parallel suffixes
/// is `rowwise` (its output is all-reduced); every other linear is `colwise`. Embeddings,
/// `lm_head`, norms, parameters outside blocks and tensors that are not matrices (experts
/// `[E, …]`, 1-d parameters of non-linear modules) are left replicated.
///
///   row-parallel suffixes: out_proj, o_proj, down_proj, attention.dense (GPT-NeoX),
///   self_attention.dense (Falcon, ChatGLM), self_attn.dense (Phi), dense_4h_to_h (ChatGLM),
///   w2 (Mixtral, Arctic)
///
/// A bias follows its weight's module. DeepSpeed's further rule — "the last linear before a
/// LayerNorm in its block is row-parallel" — needs the module order, which names alone do not
/// give; it is not applied.

#include <algorithm>
#include <array>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "tpx/core/extents.hpp"
#include "tpx/plan/path.hpp"

namespace tpx::inline v0::plan {

namespace detail {
inline bool ends_with_component(std::string_view path, std::string_view suffix) {
  return path == suffix || (path.size() > suffix.size() && path.ends_with(suffix) &&
                            path[path.size() - suffix.size() - 1] == '.');
}
}  // namespace detail

/// The style the name rules give parameter `name` of shape `shape`: "rowwise", "colwise", or
/// nothing (replicated).
inline std::optional<std::string> heuristic_style(std::string_view name,
                                                  const std::vector<index_t>& shape) {
  const bool weight = name.ends_with(".weight"), bias = name.ends_with(".bias");
  if (!weight && !bias) return std::nullopt;
  const std::string_view module = module_of(name);
  if ((weight && shape.size() != 2) || (bias && shape.size() != 1)) return std::nullopt;
  // Inside a numbered block: some path component is all digits.
  const std::vector<std::string_view> parts = components(module);
  if (std::none_of(parts.begin(), parts.end(), all_digits))
    return std::nullopt;  // embeddings, lm_head, final norm
  const std::string_view last = last_component(module);
  if (last.find("norm") != std::string_view::npos || last.starts_with("ln") ||
      last.find("embed") != std::string_view::npos)
    return std::nullopt;
  constexpr std::array<std::string_view, 8> row_suffixes{
      "out_proj",        "o_proj",        "down_proj", "attention.dense", "self_attention.dense",
      "self_attn.dense", "dense_4h_to_h", "w2"};
  for (const std::string_view s : row_suffixes)
    if (detail::ends_with_component(module, s)) return "rowwise";
  return "colwise";
}

}  // namespace tpx::inline v0::plan
