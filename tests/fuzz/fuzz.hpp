#pragma once
// What the fuzz targets share. Each target (tests/fuzz/*.cpp) is one function of the input bytes
// that must end in nothing or a tpx::error: any other exception escapes and aborts, any crash,
// leak, out-of-bounds access or undefined behaviour is reported by the sanitizers. tools/fuzz
// builds each with libFuzzer (tests/fuzz/entry.cpp); the `fuzz corpus` tests replay every
// committed input through tests/fuzz/replay.cpp with any compiler.

#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <string>
#include <string_view>

#include "tpx/core/error.hpp"

namespace tpx::fuzz {

/// The input as text.
inline std::string_view text(const std::uint8_t* data, std::size_t size) {
  return {reinterpret_cast<const char*>(data), size};
}

/// Runs `fn`; a tpx::error is the expected end of bad input, anything else propagates.
template <class Fn>
void only_tpx_errors(Fn&& fn) {
  try {
    fn();
  } catch (const tpx::error&) {
  }
}

/// A file of this process holding the input (for the readers that take a path), removed when the
/// input's run ends — a fuzzing session leaves no file behind (only a crash keeps it: then it is
/// the reproducer).
class input_file {
 public:
  input_file(const std::uint8_t* data, std::size_t size, std::string_view suffix)
      : path_(std::filesystem::temp_directory_path() /
              ("tpx-fuzz-" + std::to_string(::getpid()) + std::string(suffix))) {
    std::FILE* f = std::fopen(path_.c_str(), "wb");
    if (f == nullptr) std::abort();
    if (size > 0 && std::fwrite(data, 1, size, f) != size) std::abort();
    std::fclose(f);
  }
  input_file(const input_file&) = delete;
  input_file& operator=(const input_file&) = delete;
  ~input_file() {
    std::error_code ignored;
    std::filesystem::remove(path_, ignored);
  }
  const std::filesystem::path& path() const noexcept { return path_; }

 private:
  std::filesystem::path path_;
};

}  // namespace tpx::fuzz

/// Defines the target `name`: a function tests/fuzz/replay.cpp calls, and tests/fuzz/entry.cpp
/// turns into libFuzzer's entry point.
#define TPX_FUZZ_TARGET(name) void tpx_fuzz_##name(const std::uint8_t* data, std::size_t size)
