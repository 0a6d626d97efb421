// libFuzzer's entry point for one target: tools/fuzz compiles this unit with
// -DTPX_FUZZ_ENTRY=tpx_fuzz_<target> beside the unit that defines the target.
#include "fuzz.hpp"

void TPX_FUZZ_ENTRY(const std::uint8_t* data, std::size_t size);

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  TPX_FUZZ_ENTRY(data, size);
  return 0;
}
