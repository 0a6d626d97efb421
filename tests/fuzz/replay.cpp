// Replays committed fuzz inputs through the targets without libFuzzer (any C++ compiler), so
// every regular test run proves the corpora still end in nothing or a tpx::error:
//
//   test-fuzz-replay TARGET DIR…   (TARGET: safetensors, hf_plan, deepspeed, config; with
//                                   TPX_FUZZ_TEXT, tokenizer_json and encode)
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string_view>
#include <vector>

#include "fuzz.hpp"

TPX_FUZZ_TARGET(safetensors);
TPX_FUZZ_TARGET(hf_plan);
TPX_FUZZ_TARGET(deepspeed);
TPX_FUZZ_TARGET(config);
#ifdef TPX_FUZZ_TEXT
TPX_FUZZ_TARGET(tokenizer_json);
TPX_FUZZ_TARGET(encode);
#endif

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: test-fuzz-replay TARGET DIR...\n");
    return 2;
  }
  const std::string_view target = argv[1];
  void (*run)(const std::uint8_t*, std::size_t) = target == "safetensors" ? tpx_fuzz_safetensors
                                                  : target == "hf_plan"   ? tpx_fuzz_hf_plan
                                                  : target == "deepspeed" ? tpx_fuzz_deepspeed
                                                  : target == "config"    ? tpx_fuzz_config
                                                                          : nullptr;
#ifdef TPX_FUZZ_TEXT
  if (target == "tokenizer_json") run = tpx_fuzz_tokenizer_json;
  if (target == "encode") run = tpx_fuzz_encode;
#endif
  if (run == nullptr) {
    std::fprintf(stderr, "test-fuzz-replay: unknown target '%s'\n", argv[1]);
    return 2;
  }
  int inputs = 0;
  for (int i = 2; i < argc; ++i)
    for (const auto& entry : std::filesystem::directory_iterator(argv[i])) {
      std::ifstream in(entry.path(), std::ios::binary);
      const std::vector<char> bytes{std::istreambuf_iterator<char>(in), {}};
      run(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size());
      ++inputs;
    }
  if (inputs == 0) {
    std::fprintf(stderr, "test-fuzz-replay %s: no inputs in the corpus\n", argv[1]);
    return 1;
  }
  std::printf("%s: %d inputs, each ended in nothing or a tpx::error\n", argv[1], inputs);
  return 0;
}
