#pragma once
/// \file
/// A model directory with random weights, written by tpx itself: config.json (as given) and
/// model.safetensors with every tensor a checkpoint of that config holds, under Hugging Face's
/// names (per-expert `block_sparse_moe.experts.N.w1|w2|w3` for Mixtral, as transformers writes
/// them). For demos, benchmarks and tests that need a real checkpoint without downloading one.
///
/// Weights are uniform in ±1/√fan_in (norm weights 1 ± 0.1), from a fixed-seed generator, so the
/// same config and seed give the same bytes. Both files are written atomically.

#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <string>
#include <type_traits>
#include <vector>

#include <nlohmann/json.hpp>

#include "tpx/io/writer.hpp"
#include "tpx/model/config.hpp"

namespace tpx::inline v0::model {

namespace detail {
/// splitmix64: a small, fixed, well-mixed generator (reproducible everywhere).
struct splitmix {
  std::uint64_t state;
  double uniform() {  // in [−1, 1)
    std::uint64_t z = (state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return static_cast<double>(z >> 11) * 0x1.0p-52 - 1.0;
  }
};
}  // namespace detail

/// Writes `dir/config.json` (`config_json`, which must describe a family model::parse_config
/// accepts) and `dir/model.safetensors` in `dtype` (f32, f64, bf16 or f16). Creates `dir`.
inline void write_synthetic(const std::filesystem::path& dir, const nlohmann::json& config_json,
                            io::file_dtype dtype = io::file_dtype::bf16, std::uint64_t seed = 1) {
  const config c = parse_config(config_json, (dir / "config.json").string());
  const plan::model_config& d = c.dims;
  expect(!d.is_mla() && c.shared_inter == 0 && c.router_score == ops::scoring::softmax,
         "{}: write_synthetic writes GQA attention, dense MLPs and routed experts; model_type "
         "'{}' has {}, which it does not write yet",
         (dir / "config.json").string(), d.model_type,
         d.is_mla() ? "multi-head latent attention" : "shared experts or sigmoid routing");
  std::filesystem::create_directories(dir);
  const index_t h = d.hidden_size, q = d.n_heads * d.head_dim, kv = d.n_kv_heads * d.head_dim;
  struct spec {
    std::string name;
    std::vector<index_t> shape;
    bool norm = false;
  };
  std::vector<spec> specs{{"model.embed_tokens.weight", {d.vocab_size, h}},
                          {"model.norm.weight", {h}, true}};
  if (!c.tie_word_embeddings) specs.push_back({"lm_head.weight", {d.vocab_size, h}});
  for (index_t l = 0; l < d.num_layers; ++l) {
    const std::string p = fmt::format("model.layers.{}.", l);
    specs.push_back({p + "input_layernorm.weight", {h}, true});
    specs.push_back({p + "post_attention_layernorm.weight", {h}, true});
    for (const auto& [n, rows] : {std::pair{"q", q}, std::pair{"k", kv}, std::pair{"v", kv}}) {
      specs.push_back({fmt::format("{}self_attn.{}_proj.weight", p, n), {rows, h}});
      if (c.qkv_bias) specs.push_back({fmt::format("{}self_attn.{}_proj.bias", p, n), {rows}});
    }
    specs.push_back({p + "self_attn.o_proj.weight", {h, q}});
    if (c.o_bias) specs.push_back({p + "self_attn.o_proj.bias", {h}});
    if (c.moe_layers[static_cast<std::size_t>(l)]) {
      const index_t i = d.moe_intermediate_size;
      specs.push_back({p + "block_sparse_moe.gate.weight", {d.n_experts, h}});
      for (index_t e = 0; e < d.n_experts; ++e) {
        const std::string x = fmt::format("{}block_sparse_moe.experts.{}.", p, e);
        specs.push_back({x + "w1.weight", {i, h}});
        specs.push_back({x + "w2.weight", {h, i}});
        specs.push_back({x + "w3.weight", {i, h}});
      }
    } else {
      const index_t i = d.intermediate_size;
      for (const char* n : {"gate", "up"}) {
        specs.push_back({fmt::format("{}mlp.{}_proj.weight", p, n), {i, h}});
        if (c.mlp_bias) specs.push_back({fmt::format("{}mlp.{}_proj.bias", p, n), {i}});
      }
      specs.push_back({p + "mlp.down_proj.weight", {h, i}});
      if (c.mlp_bias) specs.push_back({p + "mlp.down_proj.bias", {h}});
    }
  }
  detail::splitmix gen{seed};
  std::vector<std::vector<std::byte>> data;
  std::vector<io::tensor_bytes> tensors;
  for (const spec& s : specs) {
    std::vector<double> v(static_cast<std::size_t>(shard::element_count(s.shape)));
    const double scale =
        s.norm ? 0.1
               : 1.0 / std::sqrt(static_cast<double>(s.shape.back() > 0 ? s.shape.back() : 1));
    for (double& x : v) x = (s.norm ? 1.0 : 0.0) + scale * gen.uniform();
    data.push_back(io::to_bytes<double>(v, dtype, s.name));
    tensors.push_back({{s.name, dtype, s.shape}, data.back()});
  }
  io::save_safetensors(dir / "model.safetensors", tensors, {{"format", "pt"}});
  const std::string text = config_json.dump(2) + "\n";
  io::write_atomically(dir / "config.json", [&](io::file_sink& out) {
    out.write(std::as_bytes(std::span<const char>(text)));
  });
}

}  // namespace tpx::inline v0::model
