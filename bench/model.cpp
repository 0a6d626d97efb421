// tpx-bench --model: a whole causal LM from its checkpoint.
//
// tpx writes a synthetic Llama-shaped checkpoint (model/synthetic.hpp; bf16, hidden 1024, 8
// layers, 16 / 8 heads of 64, inter 2816, vocab 32000 — --quick: hidden 256, 2 layers, vocab
// 4096) and reads it once into the page cache. Then, for tp ∈ {1, 2, 4}:
//   load     each rank builds its shard of the model (reads its bytes, bf16 → f32), timed from the
//            checkpoint's open to the model being ready; against the time a sequential read of
//            the same number of bytes takes (the whole file read in 8 MiB preads, in the same
//            run, scaled to the rank's bytes): `load/seq` (1.0 = as fast as reading them);
//   forward  the prompt of T tokens through the model (f32), median over repetitions, and per
//            token; `#wrong` counts logits that differ from tp 1's by more than 1e-3 relative.

#include <chrono>
#include <cmath>
#include <filesystem>
#include <string>
#include <vector>

#include "common.hpp"
#include "timed.hpp"
#include "tpx/backend/host/backend.hpp"
#include "tpx/model/causal_lm.hpp"
#include "tpx/model/synthetic.hpp"
#include "tpx/shard/gqa.hpp"

namespace tpx::bench {

std::filesystem::path synthetic_llama(index_t hidden, index_t layers, index_t inter,
                                      index_t vocab) {
  const nlohmann::json cfg = {{"architectures", {"LlamaForCausalLM"}},
                              {"model_type", "llama"},
                              {"hidden_size", hidden},
                              {"num_hidden_layers", layers},
                              {"num_attention_heads", hidden / 64},
                              {"num_key_value_heads", hidden / 128},
                              {"head_dim", 64},
                              {"intermediate_size", inter},
                              {"vocab_size", vocab},
                              {"dtype", "bfloat16"}};
  std::string dir_name =
      (std::filesystem::temp_directory_path() / "tpx-bench-model-XXXXXX").string();
  expect(::mkdtemp(dir_name.data()) != nullptr, "cannot create a temporary directory");
  model::write_synthetic(dir_name, cfg, io::file_dtype::bf16, 11);
  return dir_name;
}

void bench_model(const options& o, report& out) {
  const index_t hidden = o.quick ? 256 : 1024, layers = o.quick ? 2 : 8,
                vocab = o.quick ? 4096 : 32000, inter = o.quick ? 704 : 2816,
                tokens = o.quick ? 32 : 128;
  const int reps = o.quick ? 3 : 5;
  const std::filesystem::path dir = synthetic_llama(hidden, layers, inter, vocab),
                              file = dir / "model.safetensors";
  const double file_bytes = static_cast<double>(std::filesystem::file_size(file));
  std::vector<std::byte> whole(static_cast<std::size_t>(file_bytes));
  sequential_read(file, whole);  // into the page cache
  const model::config c = model::read_config(dir);

  out.line(fmt::format(
      "#\n# whole model from its checkpoint: synthetic Llama, hidden {}, {} layers, {} / {} heads "
      "of 64, inter {}, vocab {}, bf16 ({:.1f} MB), page-cached; f32 compute, {} tokens",
      hidden, layers, hidden / 64, hidden / 128, inter, vocab, file_bytes / 1e6, tokens));
  out.line(
      "# load/seq = slowest rank's load time ÷ a sequential read of as many bytes (same run); "
      "#wrong: logits off tp 1's by > 1e-3");
  out.line(fmt::format("# {:>3} {:>12} {:>10} {:>10} {:>9} {:>11} {:>11} {:>7}", "tp", "bytes/rank",
                       "load ms", "seq ms", "load/seq", "fwd ms", "µs/token", "#wrong"));
  std::vector<std::int64_t> ids;
  for (index_t t = 0; t < tokens; ++t) ids.push_back((t * 7919 + 13) % vocab);
  std::vector<float> reference;
  for (const int tp : {1, 2, 4}) {
    std::vector<double> load(static_cast<std::size_t>(tp)), fwd;
    std::vector<std::uint64_t> bytes(static_cast<std::size_t>(tp));
    std::vector<float> logits;
    std::vector<double> seq;
    for (int rep = 0; rep < reps; ++rep) {
      seq.push_back(sequential_read(file, whole));
      host::run(tp, [&](host::communicator& comm) {
        host::gemm_engine engine;
        const auto t0 = clock_type::now();
        const io::checkpoint ck(dir);
        model::causal_lm<layer::block_mode::tensor, host::backend, float> lm(engine, comm, c, ck);
        const double l = since(t0);
        const std::size_t r = static_cast<std::size_t>(comm.rank());
        load[r] = rep == 0 ? l : std::min(load[r], l);
        bytes[r] = lm.bytes_read();
        comm.barrier();
        const auto t1 = clock_type::now();
        lm.forward(ids);
        comm.barrier();
        const double f = since(t1);
        if (comm.rank() == 0) fwd.push_back(f);
        if (rep == 0) {
          const std::vector<float> full = lm.gather_logits();
          if (comm.rank() == 0) logits = full;
        }
      });
    }
    if (tp == 1) reference = logits;
    int wrong = 0;
    double scale = 0;
    for (const float x : reference) scale = std::max(scale, static_cast<double>(std::abs(x)));
    for (std::size_t i = 0; i < logits.size(); ++i)
      wrong += std::abs(static_cast<double>(logits[i]) - reference[i]) > 1e-3 * scale;
    std::size_t slow = 0;
    for (std::size_t r = 1; r < load.size(); ++r)
      if (load[r] > load[slow]) slow = r;
    const double seq_equiv = median(seq) * static_cast<double>(bytes[slow]) / file_bytes;
    const double f = median(fwd);
    out.row(fmt::format("  {:>3} {:>12} {:>10.1f} {:>10.1f} {:>9.2f} {:>11.2f} {:>11.1f} {:>7}", tp,
                        bytes[slow], load[slow] * 1e3, seq_equiv * 1e3, load[slow] / seq_equiv,
                        f * 1e3, f * 1e6 / static_cast<double>(tokens), wrong),
            fmt::format(R"({{"bench":"model","tp":{},"bytes_per_rank":{},"load_s":{},)"
                        R"("seq_equiv_s":{},"forward_s":{},"tokens":{},"wrong":{}}})",
                        tp, bytes[slow], load[slow], seq_equiv, f, tokens, wrong),
            wrong == 0);
  }
  std::error_code ignored;
  std::filesystem::remove_all(dir, ignored);
}

}  // namespace tpx::bench
