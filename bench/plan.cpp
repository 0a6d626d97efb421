// tpx-bench --plan: resolving a model's plan (plan/resolve.hpp), as tpx-plan does.
//
// For each model, two timings (medians over repetitions):
//   resolve      plan::resolve over the tensor list (names and shapes) with the preset's plan;
//   from header  parse a safetensors header (JSON text holding every tensor's dtype, shape and
//                offsets, as the file's first bytes hold it), build the tensor list, resolve.
// Goal for a 2,000-tensor checkpoint: well under 10 ms.

#include <chrono>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common.hpp"
#include "tpx/plan/resolve.hpp"

namespace tpx::bench {
namespace {

struct model {
  const char* label;
  const char* config;
  plan::resolve_options options;
};

/// The safetensors header of `tensors` (bf16, packed back to back).
std::string header_of(const std::vector<plan::tensor_decl>& tensors) {
  nlohmann::json h = nlohmann::json::object();
  index_t offset = 0;
  for (const plan::tensor_decl& t : tensors) {
    const index_t bytes = shard::element_count(t.shape) * 2;
    h[t.name] = {{"dtype", "BF16"}, {"shape", t.shape}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  h["__metadata__"] = {{"format", "pt"}};
  return h.dump();
}

/// Tensor names and shapes from a header, as tpx-plan --safetensors reads them.
std::vector<plan::tensor_decl> tensors_of(const std::string& header) {
  const nlohmann::json h = nlohmann::json::parse(header);
  std::vector<plan::tensor_decl> out;
  out.reserve(h.size());
  for (const auto& [name, t] : h.items())
    if (name != "__metadata__") out.push_back({name, t.at("shape").get<std::vector<index_t>>()});
  return out;
}

}  // namespace

void bench_plan(const options& o, report& out) {
  const model models[] = {
      {"Llama-3.1-405B (126 layers)",
       R"({"model_type": "llama", "hidden_size": 16384, "intermediate_size": 53248,
           "num_attention_heads": 128, "num_key_value_heads": 8, "num_hidden_layers": 126,
           "vocab_size": 128256, "tie_word_embeddings": false})",
       {.tp = 8}},
      {"Llama, 405B dims, 222 layers",
       R"({"model_type": "llama", "hidden_size": 16384, "intermediate_size": 53248,
           "num_attention_heads": 128, "num_key_value_heads": 8, "num_hidden_layers": 222,
           "vocab_size": 128256, "tie_word_embeddings": false})",
       {.tp = 8}},
      {"Mixtral-8x22B, ep 8",
       R"({"model_type": "mixtral", "hidden_size": 6144, "intermediate_size": 16384,
           "num_attention_heads": 48, "num_key_value_heads": 8, "num_hidden_layers": 56,
           "num_local_experts": 8, "num_experts_per_tok": 2, "vocab_size": 32768})",
       {.tp = 8, .ep = 8}},
      {"DeepSeek-V3",
       R"({"model_type": "deepseek_v3", "hidden_size": 7168, "intermediate_size": 18432,
           "moe_intermediate_size": 2048, "num_attention_heads": 128, "num_key_value_heads": 128,
           "num_hidden_layers": 61, "n_routed_experts": 256, "n_shared_experts": 1,
           "num_experts_per_tok": 8, "first_k_dense_replace": 3, "q_lora_rank": 1536,
           "kv_lora_rank": 512, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64,
           "v_head_dim": 128, "vocab_size": 129280})",
       {.tp = 8}},
  };
  const plan::registry styles = plan::registry::builtin();
  out.line("\n# plan resolution (plan/resolve.hpp; goal for ~2,000 tensors: well under 10 ms)");
  out.line(fmt::format("{:<30} {:>8} {:>12} {:>14} {:>12}", "model", "tensors", "resolve ms",
                       "from header ms", "µs/tensor"));
  for (const model& m : models) {
    const plan::model_config c = plan::parse_model_config(nlohmann::json::parse(m.config), m.label);
    const plan::preset* p = plan::find_preset(c.model_type);
    const std::vector<plan::tensor_decl> tensors = p->tensors(c);
    const std::string header = header_of(tensors);
    plan::plan_sources src;
    src.preset = p;
    const int repeats = o.quick || tensors.size() > 10'000 ? 3 : 15;
    std::vector<double> resolve_s, header_s;
    for (int r = 0; r < repeats; ++r) {
      auto t0 = clock_type::now();
      const plan::resolution a = plan::resolve(c, tensors, src, styles, m.options);
      resolve_s.push_back(since(t0));
      t0 = clock_type::now();
      const plan::resolution b = plan::resolve(c, tensors_of(header), src, styles, m.options);
      header_s.push_back(since(t0));
      expect(a.tensors.size() == tensors.size() && b.tensors.size() == tensors.size(),
             "--plan: {} resolved {} and {} of {} tensors", m.label, a.tensors.size(),
             b.tensors.size(), tensors.size());
    }
    const double res_ms = median(resolve_s) * 1e3, hdr_ms = median(header_s) * 1e3;
    out.row(fmt::format("{:<30} {:>8} {:>12.2f} {:>14.2f} {:>12.2f}", m.label, tensors.size(),
                        res_ms, hdr_ms, hdr_ms * 1e3 / static_cast<double>(tensors.size())),
            fmt::format(R"({{"bench":"plan","model":"{}","tensors":{},"tp":{},"ep":{},)"
                        R"("resolve_ms":{:.3f},"from_header_ms":{:.3f}}})",
                        m.label, tensors.size(), m.options.tp, m.options.ep, res_ms, hdr_ms),
            // the goal: well under 10 ms for ~2,000 tensors, i.e. 5 µs a tensor
            std::max(res_ms, hdr_ms) <= 5e-3 * static_cast<double>(tensors.size()));
  }
}

}  // namespace tpx::bench
