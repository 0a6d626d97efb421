// tpx-tiny-model: writes a model directory with random weights (model/synthetic.hpp) for tpx-run
// and tpx-plan: config.json + model.safetensors, under Hugging Face's names and config keys.
//
//   tpx-tiny-model DIR [--family llama|mixtral] [--hidden H] [--layers L] [--heads N]
//                  [--kv-heads K] [--head-dim D] [--inter I] [--experts E] [--top-k K]
//                  [--vocab V] [--dtype bf16|f32|f64] [--seed S]

#include <charconv>
#include <cstdio>
#include <string>
#include <string_view>

#include <fmt/core.h>

#include "cli.hpp"
#include "tpx/model/synthetic.hpp"

using namespace tpx;

namespace {

constexpr const char* usage =
    "usage: tpx-tiny-model DIR [--family llama|mixtral] [--hidden H] [--layers L] [--heads N]\n"
    "                      [--kv-heads K] [--head-dim D] [--inter I] [--experts E] [--top-k K]\n"
    "                      [--vocab V] [--dtype bf16|f32|f64] [--seed S] [--version]\n"
    "Writes DIR/config.json and DIR/model.safetensors: a causal LM with random weights under\n"
    "Hugging Face's names. Defaults: llama, hidden 64, 4 layers, 8 / 4 heads of 8, inter 90,\n"
    "vocab 211, bf16 (mixtral: 8 experts, top 2, inter 45).\n";

std::int64_t number(std::string_view flag, std::string_view text) {
  return cli::whole_number(flag, text, 0, 1 << 24);
}

int run(int argc, char** argv) {
  std::string dir, family = "llama", dtype = "bf16";
  std::int64_t hidden = 64, layers = 4, heads = 8, kv = 4, head_dim = 8, inter = -1, experts = 8,
               top_k = 2, vocab = 211, seed = 1;
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    if (a == "--help" || a == "-h") {
      std::fputs(usage, stdout);
      return 0;
    }
    const auto value = [&]() -> std::string_view {
      expect(i + 1 < argc, "{} needs a value", a);
      return argv[++i];
    };
    if (a == "--family")
      family = value();
    else if (a == "--dtype")
      dtype = value();
    else if (a == "--hidden")
      hidden = number(a, value());
    else if (a == "--layers")
      layers = number(a, value());
    else if (a == "--heads")
      heads = number(a, value());
    else if (a == "--kv-heads")
      kv = number(a, value());
    else if (a == "--head-dim")
      head_dim = number(a, value());
    else if (a == "--inter")
      inter = number(a, value());
    else if (a == "--experts")
      experts = number(a, value());
    else if (a == "--top-k")
      top_k = number(a, value());
    else if (a == "--vocab")
      vocab = number(a, value());
    else if (a == "--seed")
      seed = number(a, value());
    else if (a.starts_with("-"))
      fail("unknown argument '{}'; run tpx-tiny-model --help", a);
    else {
      expect(dir.empty(), "one directory only: got '{}' and '{}'", dir, a);
      dir = a;
    }
  }
  expect(!dir.empty(), "DIR is required; run tpx-tiny-model --help");
  expect(family == "llama" || family == "mixtral", "--family must be llama or mixtral, got '{}'",
         family);
  const io::file_dtype ft =
      dtype == "f32"   ? io::file_dtype::f32
      : dtype == "f64" ? io::file_dtype::f64
      : dtype == "bf16"
          ? io::file_dtype::bf16
          : (fail("--dtype must be bf16, f32 or f64, got '{}'", dtype), io::file_dtype::bf16);
  const bool moe = family == "mixtral";
  if (inter < 0) inter = moe ? 45 : 90;
  nlohmann::json c = {
      {"architectures", {moe ? "MixtralForCausalLM" : "LlamaForCausalLM"}},
      {"model_type", family},
      {"hidden_size", hidden},
      {"num_hidden_layers", layers},
      {"num_attention_heads", heads},
      {"num_key_value_heads", kv},
      {"head_dim", head_dim},
      {"intermediate_size", inter},
      {"vocab_size", vocab},
      {"hidden_act", "silu"},
      {"rms_norm_eps", 1e-5},
      {"rope_parameters", {{"rope_type", "default"}, {"rope_theta", moe ? 1e6 : 10000.0}}},
      {"tie_word_embeddings", false},
      {"bos_token_id", 1},
      {"eos_token_id", 2},
      {"dtype", dtype == "f32"   ? "float32"
                : dtype == "f64" ? "float64"
                                 : "bfloat16"}};
  if (moe) {
    c["num_local_experts"] = experts;
    c["num_experts_per_tok"] = top_k;
    c["sliding_window"] = nullptr;
  }
  model::write_synthetic(dir, c, ft, static_cast<std::uint64_t>(seed));
  fmt::print("tpx-tiny-model: wrote {} ({} {} layers, hidden {}, {} / {} heads, vocab {}, {})\n",
             dir, family, layers, hidden, heads, kv, vocab, dtype);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return tpx::cli::main("tpx-tiny-model", argc, argv, run);
}
