#pragma once
/// \file
/// DeepSpeed AutoTP's `tensor_parallel` section: `autotp_size`, `preset_model` and a
/// `partition_config` of layer specs.
///
///   {"tensor_parallel": {"autotp_size": 4, "partition_config": {
///      "use_default_specs": false,
///      "layer_specs": [
///        {"patterns": [".*\\.o_proj\\.weight$"], "partition_type": "row"},
///        {"patterns": [".*\\.qkv_proj\\.weight$"], "partition_type": "column",
///         "shape": [[4096, 1024, 1024], -1], "partition_dim": 0},
///        {"patterns": [".*\\.gate_up_proj\\.weight$"], "partition_type": "column",
///         "shape": [2, -1], "model_types": ["llama"]}]}}}
///
/// A pattern is a regular expression in Python's syntax matched from the start of the full
/// parameter name (Python's `re.match`), by `python_pattern`'s automaton. The first spec with a matching pattern wins. `row` splits the in dim (dim 1,
/// row-parallel: rowwise), `column` the out dim (dim 0: colwise), `skip` leaves the tensor
/// replicated; `partition_dim` overrides the dim. `shape` describes a fused weight: at the split
/// dim, a count of equal sub-parameters (`2`) or their sizes (`[q, kv, kv]`), each split on its
/// own; `-1` elsewhere means "any size".

#include <algorithm>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "tpx/core/error.hpp"
#include "tpx/core/json.hpp"
#include "tpx/plan/pattern.hpp"
#include "tpx/shard/placement.hpp"
#include "tpx/style/placement.hpp"

namespace tpx::inline v0::plan {

/// One layer spec of a DeepSpeed partition_config.
struct ds_spec {
  enum class type { row, column, skip };

  std::vector<std::string> patterns;
  type partition = type::skip;
  int partition_dim = 0;  ///< the split dim: from `partition_dim`, else 1 for row, 0 for column
  /// `shape`, one entry per dim: −1 (any), a size, or (at the split dim only) sub-parameters.
  struct dim_shape {
    index_t size = -1;               ///< −1: any; else the dim's size (or sub-parameter count)
    std::vector<index_t> sub_sizes;  ///< unequal sub-parameters, when given as a list
    bool count = false;              ///< `size` counts equal sub-parameters
  };
  std::vector<dim_shape> shape;
  std::vector<std::string> model_types;  ///< empty: every model
  std::size_t index = 0;                 ///< position in layer_specs, for reports

  /// True when a pattern matches `name` from its start and the model type is allowed.
  bool matches(std::string_view name, std::string_view model_type) const {
    if (!model_types.empty() &&
        std::find(model_types.begin(), model_types.end(), model_type) == model_types.end())
      return false;
    return std::any_of(compiled.begin(), compiled.end(),
                       [&](const python_pattern& p) { return p.match(name); });
  }

  /// The placement of a tensor of `dims` over `tp` ranks under this spec; `unit` is the size of
  /// the whole units (a head's dim) sub-parameters are split in. Errors name the tensor.
  shard::placement placement(std::string_view tensor, const std::vector<index_t>& dims, int tp,
                             shard::split_kind kind, index_t unit = 1) const {
    if (partition == type::skip) return shard::placement::replicated(dims);
    expect(partition_dim >= 0 && static_cast<std::size_t>(partition_dim) < dims.size(),
           "{}: layer spec {} splits dim {} but the tensor has shape {}", tensor, index,
           partition_dim, shard::shape_text(dims));
    expect(shape.size() <= dims.size(),
           "{}: layer spec {} gives a shape of {} dims for a tensor of shape {}", tensor, index,
           shape.size(), shard::shape_text(dims));
    const index_t extent = dims[static_cast<std::size_t>(partition_dim)];
    std::vector<shard::block> blocks;
    for (std::size_t d = 0; d < shape.size(); ++d) {
      const dim_shape& s = shape[d];
      if (static_cast<int>(d) == partition_dim && (s.count || !s.sub_sizes.empty())) {
        if (s.count) {
          expect(s.size >= 1 && extent % s.size == 0,
                 "{} dim {}: layer spec {} splits it into {} equal sub-parameters, but {} is not a "
                 "multiple of {}",
                 tensor, d, index, s.size, extent, s.size);
          blocks.assign(static_cast<std::size_t>(s.size), {extent / s.size, unit});
        } else {
          index_t total = 0;
          for (const index_t n : s.sub_sizes) {
            blocks.push_back({n, unit});
            total += n;
          }
          expect(
              total == extent,
              "{} dim {}: layer spec {} gives sub-parameters adding up to {}, but the dim has {}",
              tensor, d, index, total, extent);
        }
      } else {
        expect(s.size < 0 || s.size == dims[d],
               "{} dim {}: layer spec {} expects size {}, the tensor has {}", tensor, d, index,
               s.size, dims[d]);
      }
    }
    return style::dim_placement(dims, partition_dim, tp, {.kind = kind, .blocks = blocks}, tensor);
  }

  std::vector<python_pattern> compiled;  ///< `patterns`, compiled
};

/// A parsed `tensor_parallel` section.
struct ds_config {
  int autotp_size = 0;  ///< 0: not given
  std::string preset_model;
  bool use_default_specs = false;
  std::vector<ds_spec> specs;

  /// The first spec matching `name`, or nullptr.
  const ds_spec* first_match(std::string_view name, std::string_view model_type) const {
    for (const ds_spec& s : specs)
      if (s.matches(name, model_type)) return &s;
    return nullptr;
  }
};

/// Parses a DeepSpeed config (or its `tensor_parallel` section alone). `what` names it in errors.
inline ds_config parse_deepspeed(const nlohmann::json& j, std::string_view what) {
  expect(j.is_object(), "{}: a DeepSpeed config must be a JSON object", what);
  const nlohmann::json& tp = j.contains("tensor_parallel") ? j.at("tensor_parallel") : j;
  expect(tp.is_object(), "{}: \"tensor_parallel\" must be an object", what);
  ds_config c;
  if (tp.contains("autotp_size")) {
    const nlohmann::json& n = tp.at("autotp_size");
    expect(n.is_number_integer() && n.get<std::int64_t>() >= 1 && n.get<std::int64_t>() <= 65536,
           "{}: autotp_size must be a whole number ≥ 1, got {}", what, json_excerpt(n));
    c.autotp_size = n.get<int>();
  }
  if (tp.contains("preset_model")) {
    expect(tp.at("preset_model").is_string(), "{}: preset_model must be a string", what);
    c.preset_model = tp.at("preset_model").get<std::string>();
  }
  if (!tp.contains("partition_config")) return c;
  const nlohmann::json& pc = tp.at("partition_config");
  expect(pc.is_object(), "{}: partition_config must be an object", what);
  if (pc.contains("use_default_specs")) {
    expect(pc.at("use_default_specs").is_boolean(), "{}: use_default_specs must be true or false",
           what);
    c.use_default_specs = pc.at("use_default_specs").get<bool>();
  }
  if (!pc.contains("layer_specs")) return c;
  expect(pc.at("layer_specs").is_array(), "{}: layer_specs must be an array", what);
  for (const nlohmann::json& s : pc.at("layer_specs")) {
    ds_spec spec;
    spec.index = c.specs.size();
    const std::string where = fmt::format("{}: layer_specs[{}]", what, spec.index);
    expect(s.is_object(), "{}: must be an object", where);
    expect(s.contains("patterns") && s.at("patterns").is_array() && !s.at("patterns").empty(),
           "{}: \"patterns\" must be a non-empty array of regular expressions", where);
    for (const nlohmann::json& p : s.at("patterns")) {
      expect(p.is_string(), "{}: pattern {} is not a string", where, json_excerpt(p));
      spec.patterns.push_back(p.get<std::string>());
      spec.compiled.emplace_back(spec.patterns.back(), where);
    }
    expect(s.contains("partition_type") && s.at("partition_type").is_string(),
           "{}: \"partition_type\" must be \"row\", \"column\" or \"skip\"", where);
    const std::string type = s.at("partition_type").get<std::string>();
    if (type == "row")
      spec.partition = ds_spec::type::row;
    else if (type == "column")
      spec.partition = ds_spec::type::column;
    else if (type == "skip")
      spec.partition = ds_spec::type::skip;
    else
      fail("{}: partition_type \"{}\" is not \"row\", \"column\" or \"skip\"", where, type);
    spec.partition_dim = spec.partition == ds_spec::type::row ? 1 : 0;
    if (s.contains("partition_dim")) {
      const nlohmann::json& d = s.at("partition_dim");
      expect(d.is_number_integer() && d.get<std::int64_t>() >= 0 && d.get<std::int64_t>() < 8,
             "{}: partition_dim must be a dim index (0, 1, …), got {}", where, json_excerpt(d));
      spec.partition_dim = d.get<int>();
    }
    if (s.contains("shape")) {
      const nlohmann::json& sh = s.at("shape");
      expect(sh.is_array(), "{}: \"shape\" must be an array", where);
      for (std::size_t d = 0; d < sh.size(); ++d) {
        const nlohmann::json& e = sh[d];
        ds_spec::dim_shape ds;
        if (e.is_array()) {
          expect(static_cast<int>(d) == spec.partition_dim,
                 "{}: shape[{}] lists sub-parameters, but the split dim is {}", where, d,
                 spec.partition_dim);
          for (const nlohmann::json& n : e) {
            expect(n.is_number_integer() && n.get<std::int64_t>() >= 1,
                   "{}: shape[{}] holds {}, not a positive size", where, d, json_excerpt(n));
            ds.sub_sizes.push_back(n.get<index_t>());
          }
          expect(!ds.sub_sizes.empty(), "{}: shape[{}] is an empty list", where, d);
        } else {
          expect(
              e.is_number_integer() && (e.get<std::int64_t>() == -1 || e.get<std::int64_t>() >= 1),
              "{}: shape[{}] is {}; use -1, a positive size, or a list of sub-parameter sizes",
              where, d, json_excerpt(e));
          ds.size = e.get<index_t>();
          ds.count = static_cast<int>(d) == spec.partition_dim && ds.size >= 1;
        }
        spec.shape.push_back(std::move(ds));
      }
    }
    if (s.contains("model_types")) {
      const nlohmann::json& m = s.at("model_types");
      expect(m.is_array(), "{}: \"model_types\" must be an array of strings", where);
      for (const nlohmann::json& t : m) {
        expect(t.is_string(), "{}: model type {} is not a string", where, json_excerpt(t));
        spec.model_types.push_back(t.get<std::string>());
      }
    }
    c.specs.push_back(std::move(spec));
  }
  return c;
}

}  // namespace tpx::inline v0::plan
