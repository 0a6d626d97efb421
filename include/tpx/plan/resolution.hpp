#pragma once
/// \file
/// What plan resolution gives (resolve.hpp): per tensor its style, source and placement, the
/// report, the per-rank bytes and the communication per token; and `to_json`, the
/// `tpx-plan --json` schema.

#include <algorithm>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "tpx/plan/deepspeed.hpp"
#include "tpx/plan/hf.hpp"
#include "tpx/plan/presets.hpp"
#include "tpx/plan/registry.hpp"
#include "tpx/shard/placement.hpp"

namespace tpx::inline v0::plan {

struct resolve_options {
  int tp = 1;
  bool sp = false;  ///< sequence parallelism: SP rules apply, collectives in their SP form
  int ep = 1;       ///< expert parallelism: 1, or tp (experts on the TP ranks)
  /// How an uneven dim is split: balanced (sizes differ by at most one; tpx's layers), or chunk
  /// (torch.chunk, as transformers' DTensor shards: 106 over 3 is 36 / 36 / 34). Heads stay whole
  /// either way; experts are whole experts.
  shard::split_kind split = shard::split_kind::balanced;
  /// How an `ep_dispatch_experts` module moves its tokens (registry.hpp: auto, all_to_all,
  /// all_reduce); transformers takes it apart from the plan too.
  plan::dispatch dispatch = plan::dispatch::automatic;
};

/// The plan sources given; null ones are absent.
struct plan_sources {
  const ds_config* deepspeed = nullptr;
  const hf_plan* hf = nullptr;
  std::string hf_name = "plan";  ///< where the HF plan came from, for reports
  const plan::preset* preset = nullptr;
  bool heuristics = true;
};

/// One tensor's resolution.
struct resolved_tensor {
  tensor_decl tensor;
  std::string style;   ///< the style string applied; "replicate" when no rule matched
  style_spec spec;     ///< what that string means
  std::string source;  ///< where the rule came from: "preset llama: model.layers.*.mlp.up_proj"
  shard::placement placement;
  /// Why no placement serves the style at this tp (heads that do not fit it, E % tp ≠ 0); the
  /// placement is then whole on every rank, and the resolution is not usable. Empty: placed.
  std::string unplaceable;

  /// The shape rank `rank` holds.
  std::vector<index_t> rank_shape(int rank) const { return placement.local_shape(rank); }
  /// Bytes rank `rank` holds.
  index_t bytes(int rank) const {
    const index_t all = checked_mul(shard::element_count(tensor.shape, tensor.name),
                                    tensor.element_bytes, tensor.name);
    if (placement.is_replicated()) return all;
    const index_t extent = tensor.shape[static_cast<std::size_t>(placement.dim)];
    return extent == 0 ? 0 : all / extent * placement.partition.of(rank).size();
  }
};

/// What resolution found.
struct plan_report {
  std::vector<std::string> unmatched;     ///< tensors no rule matched (left replicated)
  std::vector<std::string> unused_rules;  ///< rules of the deciding source that matched nothing
  std::vector<std::string> unsupported;   ///< rules whose style could not place their tensor
  /// Tensors whose rule no placement serves at this tp (resolved_tensor::unplaceable), by name
  /// pattern: attention heads that do not fit, experts that do not divide.
  std::vector<std::string> unplaceable;
  std::vector<std::string> warnings;  ///< uneven splits, KV replication, ties, ambiguities
};

struct resolution {
  std::vector<resolved_tensor> tensors;
  plan_report report;
  std::string decided_by;            ///< the deciding source
  std::vector<index_t> param_bytes;  ///< per rank
  double comm_forward = 0;           ///< bytes per token per layer (nccl-tests sizes)
  double comm_backward = 0;          ///< bytes per token per layer (nccl-tests sizes)
  double comm_forward_bus = 0;       ///< the same as bus bytes (traffic.hpp's bus_factor)
  double comm_backward_bus = 0;
  resolve_options options;

  /// The tensor named `name`, or nullptr.
  const resolved_tensor* find(std::string_view name) const {
    const auto it = std::find_if(tensors.begin(), tensors.end(),
                                 [&](const resolved_tensor& t) { return t.tensor.name == name; });
    return it == tensors.end() ? nullptr : &*it;
  }
  /// The tensor named `name`; an error naming it when the plan has no such tensor.
  const resolved_tensor& at(std::string_view name) const {
    const resolved_tensor* t = find(name);
    expect(t != nullptr, "the plan ({}) has no tensor '{}' among its {} tensors", decided_by, name,
           tensors.size());
    return *t;
  }
  /// Whether every tensor is placed: no rule of the plan is unplaceable at this tp.
  bool usable() const noexcept { return report.unplaceable.empty(); }
  /// Errors with the first unplaceable tensor's sentence (and how many more there are) unless
  /// the resolution is usable.
  void expect_usable() const {
    const auto unplaced = [](const resolved_tensor& t) { return !t.unplaceable.empty(); };
    const auto first = std::find_if(tensors.begin(), tensors.end(), unplaced);
    if (first == tensors.end()) return;
    const auto more = std::count_if(first + 1, tensors.end(), unplaced);
    if (more == 0) throw error(first->unplaceable);
    fail("{} (and {} more tensors the plan cannot place at tp {})", first->unplaceable, more,
         options.tp);
  }
};

/// The resolution as one JSON object (the `tpx-plan --json` schema):
///   {"tensors": [{"name", "style", "source", "global_shape", "split_dim" (−1: replicated),
///                 "rank_intervals" (per rank, the [begin, end) pieces of the split dim it holds),
///                 "rank_shapes", "bytes_per_rank", and "unplaceable" (the reason) for a tensor
///                 its rule cannot place at this tp}],
///    "report": {"decided_by", "unmatched", "unused_rules", "unsupported", "unplaceable",
///               "warnings", "usable"},
///    "totals": {"param_bytes_per_rank", "param_bytes_max", "param_bytes_min",
///               "comm_bytes_per_token_per_layer": {"forward", "backward", "forward_bus",
///                                                  "backward_bus"}},
///    "options": {"tp", "sp", "ep", "split", "ep_dispatch"}}
inline nlohmann::json to_json(const resolution& r) {
  nlohmann::json tensors = nlohmann::json::array();
  const int tp = r.options.tp;
  for (const resolved_tensor& t : r.tensors) {
    nlohmann::json shapes = nlohmann::json::array(), bytes = nlohmann::json::array(),
                   intervals = nlohmann::json::array();
    for (int rank = 0; rank < tp; ++rank) {
      shapes.push_back(t.rank_shape(rank));
      bytes.push_back(t.bytes(rank));
      if (!t.placement.is_replicated()) {
        nlohmann::json pieces = nlohmann::json::array();
        for (const shard::interval& i : t.placement.partition.of(rank).parts)
          pieces.push_back({i.begin, i.end});
        intervals.push_back(std::move(pieces));
      }
    }
    nlohmann::json entry = {{"name", t.tensor.name},
                            {"style", t.style},
                            {"source", t.source},
                            {"global_shape", t.tensor.shape},
                            {"split_dim", t.placement.dim},
                            {"rank_intervals", std::move(intervals)},
                            {"rank_shapes", std::move(shapes)},
                            {"bytes_per_rank", std::move(bytes)}};
    if (!t.unplaceable.empty()) entry["unplaceable"] = t.unplaceable;
    tensors.push_back(std::move(entry));
  }
  const auto [lo, hi] = std::minmax_element(r.param_bytes.begin(), r.param_bytes.end());
  return {{"tensors", std::move(tensors)},
          {"report",
           {{"decided_by", r.decided_by},
            {"unmatched", r.report.unmatched},
            {"unused_rules", r.report.unused_rules},
            {"unsupported", r.report.unsupported},
            {"unplaceable", r.report.unplaceable},
            {"warnings", r.report.warnings},
            {"usable", r.usable()}}},
          {"totals",
           {{"param_bytes_per_rank", r.param_bytes},
            {"param_bytes_max", r.param_bytes.empty() ? 0 : *hi},
            {"param_bytes_min", r.param_bytes.empty() ? 0 : *lo},
            {"comm_bytes_per_token_per_layer",
             {{"forward", r.comm_forward},
              {"backward", r.comm_backward},
              {"forward_bus", r.comm_forward_bus},
              {"backward_bus", r.comm_backward_bus}}}}},
          {"options",
           {{"tp", tp},
            {"sp", r.options.sp},
            {"ep", r.options.ep},
            {"split", r.options.split == shard::split_kind::chunk ? "chunk" : "balanced"},
            {"ep_dispatch", name(r.options.dispatch)}}}};
}

}  // namespace tpx::inline v0::plan
