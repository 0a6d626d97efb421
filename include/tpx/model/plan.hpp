#pragma once
/// \file
/// A model's plan inputs, gathered once for every tool: config.json, the Hugging Face plan
/// (`--plan`, else config.json's plan sections), a DeepSpeed config, the preset of its
/// model_type, and the tensor list (from the checkpoint's headers, keeping what the preset knows
/// of a tensor whose name and shape agree; or from the preset). `resolve` applies
/// plan::resolve's priority to them; `expect_matches` checks that a model's layers hold every
/// checkpoint tensor where the resolved plan places it.

#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "tpx/io/checkpoint.hpp"
#include "tpx/model/config.hpp"
#include "tpx/plan/resolve.hpp"

namespace tpx::inline v0::model {

class plan_inputs {
 public:
  /// `config_json` read from `config_path`; `plan_path` and `ds_path` empty when not given.
  plan_inputs(nlohmann::json config_json, std::string config_path, const std::string& plan_path,
              const std::string& ds_path)
      : json_(std::move(config_json)),
        config_path_(std::move(config_path)),
        config_(plan::parse_model_config(json_, config_path_)),
        styles_(plan::registry::builtin()) {
    if (!plan_path.empty()) {
      hf_json_ = io::read_json_file(plan_path, "plan");
      hf_ = plan::parse_hf_plan(hf_json_, plan_path, config_.causal_lm(), styles_);
      hf_name_ = "plan " + plan_path;
    } else if (json_.contains("base_model_tp_plan") || json_.contains("lm_tp_plan")) {
      nlohmann::json sections = nlohmann::json::object();
      for (const char* k : {"base_model_tp_plan", "base_model_ep_plan", "base_model_sp_plan",
                            "lm_tp_plan", "lm_sp_plan"})
        if (json_.contains(k)) sections[k] = json_.at(k);
      hf_ = plan::parse_hf_plan(sections, config_path_, config_.causal_lm(), styles_);
      hf_json_ = std::move(sections);
      hf_name_ = "config " + config_path_;
    }
    if (!ds_path.empty())
      ds_ = plan::parse_deepspeed(io::read_json_file(ds_path, "DeepSpeed config"), ds_path);
    preset_ = plan::find_preset(config_.model_type);
    if (preset_ == nullptr && ds_ && !ds_->preset_model.empty())
      preset_ = plan::find_preset(ds_->preset_model);
  }

  const nlohmann::json& json() const noexcept { return json_; }
  const plan::model_config& config() const noexcept { return config_; }
  const plan::registry& styles() const noexcept { return styles_; }
  const std::optional<plan::ds_config>& deepspeed() const noexcept { return ds_; }
  const plan::preset* preset() const noexcept { return preset_; }
  bool has_hf_plan() const noexcept { return hf_.has_value(); }

  /// The sources, pointing into this object.
  plan::plan_sources sources() const {
    plan::plan_sources s;
    if (hf_) s.hf = &*hf_;
    s.hf_name = hf_name_;
    if (ds_) s.deepspeed = &*ds_;
    s.preset = preset_;
    return s;
  }

  /// tp from `requested`, else the DeepSpeed config's autotp_size, else 1; they must agree.
  int tp(std::optional<int> requested) const {
    const int ds_tp = ds_ && ds_->autotp_size > 0 ? ds_->autotp_size : 0;
    if (requested && ds_tp > 0)
      expect(*requested == ds_tp, "--tp {} disagrees with autotp_size {} in the DeepSpeed config",
             *requested, ds_tp);
    const int tp = requested.value_or(ds_tp > 0 ? ds_tp : 1);
    expect(tp >= 1, "--tp must be at least 1, got {}", tp);
    return tp;
  }

  /// The tensors of checkpoint `ck`, with what the preset knows of those whose names and shapes
  /// agree (fused blocks, the [in, out] layout).
  std::vector<plan::tensor_decl> tensors(const io::checkpoint& ck) const {
    std::map<std::string, plan::tensor_decl> known;
    if (preset_ != nullptr)
      for (plan::tensor_decl& d : preset_->tensors(config_)) known.emplace(d.name, std::move(d));
    std::vector<plan::tensor_decl> out;
    for (const std::string& name : ck.names()) {
      const io::tensor_info& info = ck.info(name);
      plan::tensor_decl d{name, info.shape};
      if (const auto it = known.find(name); it != known.end() && it->second.shape == info.shape)
        d = it->second;
      d.element_bytes = static_cast<index_t>(io::size_of(info.dtype));
      out.push_back(std::move(d));
    }
    return out;
  }
  /// The tensors the preset declares (no checkpoint given).
  std::vector<plan::tensor_decl> preset_tensors() const {
    expect(preset_ != nullptr,
           "{}: there is no preset for model type '{}' to list its tensors; give --safetensors "
           "with the checkpoint",
           config_path_, config_.model_type);
    return preset_->tensors(config_);
  }

  /// The Hugging Face plan that decides, as transformers 5.24 loads it (plan::transformers_plan):
  /// the given plan or config.json's plan sections, else the preset's. A DeepSpeed config, which
  /// has no such form, or a plan with strings transformers does not register, is an error.
  nlohmann::json transformers_plan() const {
    expect(!ds_ || ds_->specs.empty(),
           "a DeepSpeed partition_config decides this model's plan; it has no Hugging Face plan "
           "form to print");
    if (hf_) return plan::transformers_plan(hf_json_, hf_name_);
    expect(preset_ != nullptr,
           "{}: no plan given, no plan sections in config.json and no preset for model type "
           "'{}': there is no plan to print",
           config_path_, config_.model_type);
    return plan::transformers_plan(preset_->plan(config_), "preset " + preset_->model_type);
  }

  plan::resolution resolve(std::vector<plan::tensor_decl> tensors, plan::resolve_options o) const {
    return plan::resolve(config_, std::move(tensors), sources(), styles_, o);
  }

 private:
  nlohmann::json json_;
  std::string config_path_;
  plan::model_config config_;
  plan::registry styles_;
  std::optional<plan::hf_plan> hf_;
  nlohmann::json hf_json_;  ///< the HF plan as given
  std::string hf_name_ = "plan";
  std::optional<plan::ds_config> ds_;
  const plan::preset* preset_ = nullptr;
};

/// Checks that every checkpoint tensor a model holds sits where the plan `r` places it (`held`:
/// name and placement, as `causal_lm::checkpoint_placements` gives them). The embedding is
/// exempt: tpx always splits it on the vocabulary. Errors name the tensor, the plan's style and
/// rule, and what the model holds.
inline void expect_matches(const plan::resolution& r,
                           const std::vector<std::pair<std::string, shard::placement>>& held,
                           std::string_view exempt = "model.embed_tokens.weight") {
  std::map<std::string_view, const plan::resolved_tensor*> planned;
  for (const plan::resolved_tensor& t : r.tensors) planned.emplace(t.tensor.name, &t);
  const int tp = r.options.tp;
  const auto describe = [&](const shard::placement& p) {
    if (p.is_replicated()) return std::string("whole on every rank");
    std::string s = fmt::format("split on dim {} as", p.dim);
    for (int rank = 0; rank < tp; ++rank)
      s += fmt::format(" {}", shard::shape_text(p.local_shape(rank)));
    return s;
  };
  for (const auto& [name, p] : held) {
    if (name == exempt) continue;
    const auto it = planned.find(name);
    expect(it != planned.end(), "plan: the model holds '{}', which the plan does not list", name);
    const plan::resolved_tensor& t = *it->second;
    bool same = p.shape == t.placement.shape;
    for (int rank = 0; same && rank < tp; ++rank) same = p.of(rank) == t.placement.of(rank);
    expect(same,
           "plan: {} places '{}' as '{}' ({}: {}), but the model's layers hold it {}; tpx runs "
           "colwise q/k/v/gate/up, rowwise o/down in whole heads, vocab-parallel embedding and "
           "head, and experts by their TP or EP split",
           r.decided_by, name, t.style, t.source, describe(t.placement), describe(p));
  }
}

}  // namespace tpx::inline v0::model
