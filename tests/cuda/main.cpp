// The cuda suite's main: without a usable CUDA device every test is skipped (exit 77, which
// Meson reports as SKIP), so CI machines without a GPU still build and link the suite.

#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cstdio>
#include <string>

#include "tpx/backend/cuda/memory.hpp"

int main(int argc, char** argv) {
  std::string why;
  if (!tpx::cuda::device_available(&why)) {
    std::printf("cuda suite skipped: %s\n", why.c_str());
    return 77;
  }
  doctest::Context context(argc, argv);
  return context.run();
}
