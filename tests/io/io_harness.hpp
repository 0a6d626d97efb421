#pragma once
// Helpers of the io suite: a scratch directory removed at the end, raw files written byte for
// byte (for the bad-file cases), and whole-file comparison.

#include <stdlib.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <string_view>
#include <vector>

#include "tpx/core/error.hpp"
#include "tpx/shard/placement.hpp"

namespace tpx::test {

/// A fresh directory under the system's temporary directory, removed with everything in it.
struct temp_dir {
  std::filesystem::path path;
  temp_dir() {
    std::string p = (std::filesystem::temp_directory_path() / "tpx-io-XXXXXX").string();
    expect(::mkdtemp(p.data()) != nullptr, "cannot create a temporary directory");
    path = p;
  }
  ~temp_dir() {
    std::error_code ignored;
    std::filesystem::remove_all(path, ignored);
  }
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;
  std::filesystem::path operator/(std::string_view name) const { return path / name; }
};

inline void write_file(const std::filesystem::path& p, std::string_view bytes) {
  std::ofstream out(p, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

inline std::string read_file(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

/// A safetensors file: the 8-byte little-endian length of `header`, `header`, then `data`.
inline std::string safetensors_bytes(std::string_view header, std::string_view data) {
  std::string out(8, '\0');
  std::uint64_t n = header.size();
  for (char& b : out) {
    b = static_cast<char>(n & 0xFF);
    n >>= 8;
  }
  return out.append(header).append(data);
}

/// The element offsets a selection denotes, in its row-major order (the slow, obvious way).
inline std::vector<index_t> selected_offsets(const std::vector<index_t>& shape,
                                             const shard::selection& sel) {
  std::vector<index_t> out{0};
  for (std::size_t d = 0; d < shape.size(); ++d) {
    std::vector<index_t> next;
    for (index_t base : out)
      for (const shard::interval& p : sel.dims[d].parts)
        for (index_t i = p.begin; i < p.end; ++i) next.push_back(base * shape[d] + i);
    out = next;
  }
  return sel.size() == 0 ? std::vector<index_t>{} : out;
}

}  // namespace tpx::test
