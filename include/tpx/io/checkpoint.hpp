#pragma once
/// \file
/// A checkpoint: one safetensors file, or the set a `model.safetensors.index.json` names. Lists
/// tensors from the headers alone and reads one rank's shard of a tensor without reading the rest.
///
///   row split of W [out, in]:      rows [b, e)          → one contiguous byte range
///   column split:                  columns [b, e)       → one range per row
///   packed (gate|up, q|k|v):       several row pieces   → one range per piece
///
/// Reads copy those ranges out of the file's mapping (converting the dtype when asked), so the
/// bytes read are exactly the shard's bytes; `read_into` returns the count and the checkpoint
/// keeps a running total. Reads are safe from many threads at once.

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <span>
#include <sstream>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <vector>

#include "tpx/io/file.hpp"
#include "tpx/io/safetensors.hpp"

namespace tpx::inline v0::io {

namespace detail {

/// Calls `fn(offset, count)`, in bytes from the tensor's first byte, for every maximal contiguous
/// run of the block `sel` of a row-major tensor of `shape`, in the block's row-major order.
template <class Fn>
void for_each_run(const std::vector<index_t>& shape, std::uint64_t element,
                  const shard::selection& sel, Fn&& fn) {
  const std::size_t n = shape.size();
  if (sel.size() == 0) return;
  if (n == 0) {
    fn(std::uint64_t{0}, element);
    return;
  }
  std::vector<std::uint64_t> stride(n, element);
  for (std::size_t d = n - 1; d > 0; --d)
    stride[d - 1] = stride[d] * static_cast<std::uint64_t>(shape[d]);
  const auto whole = [&](std::size_t d) {
    const shard::pieces& p = sel.dims[d];
    return p.parts.size() == 1 && p.parts[0] == shard::interval{0, shape[d]};
  };
  std::size_t k = n - 1;  // the dims after k are whole: a piece of dim k is one run
  while (k > 0 && whole(k)) --k;

  std::uint64_t run_at = 0, run_bytes = 0;
  const auto emit = [&](std::uint64_t at, std::uint64_t bytes) {
    if (bytes == 0) return;
    if (run_bytes > 0 && run_at + run_bytes == at) {
      run_bytes += bytes;
      return;
    }
    if (run_bytes > 0) fn(run_at, run_bytes);
    run_at = at;
    run_bytes = bytes;
  };
  // Odometer over the selected indices of the dims before k.
  std::vector<std::vector<index_t>> outer(k);
  for (std::size_t d = 0; d < k; ++d)
    for (const shard::interval& p : sel.dims[d].parts)
      for (index_t i = p.begin; i < p.end; ++i) outer[d].push_back(i);
  std::vector<std::size_t> at(k, 0);
  while (true) {
    std::uint64_t base = 0;
    for (std::size_t d = 0; d < k; ++d)
      base += static_cast<std::uint64_t>(outer[d][at[d]]) * stride[d];
    for (const shard::interval& p : sel.dims[k].parts)
      emit(base + static_cast<std::uint64_t>(p.begin) * stride[k],
           static_cast<std::uint64_t>(p.size()) * stride[k]);
    std::size_t d = k;
    while (d > 0 && ++at[d - 1] == outer[d - 1].size()) at[--d] = 0;
    if (d == 0) break;
  }
  if (run_bytes > 0) fn(run_at, run_bytes);
}

template <class T>
T load(const std::byte* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

/// Converts `count` elements of file dtype `from` at `src` to T at `dst`.
template <class T>
void convert_run(file_dtype from, const std::byte* src, std::size_t count, T* dst) {
  if (to_file_dtype(dtype_of<T>) == from) {
    std::memcpy(dst, src, count * sizeof(T));
    return;
  }
  if constexpr (std::is_same_v<T, float>) {
    if (from == file_dtype::bf16) return widen_bf16(src, count, dst);  // the common case
  }
  const auto each = [&]<class S>(auto decode) {
    for (std::size_t i = 0; i < count; ++i)
      dst[i] = convert<T>(decode(load<S>(src + i * sizeof(S))));
  };
  switch (from) {
    case file_dtype::f64:
      each.template operator()<double>([](double v) { return v; });
      break;
    case file_dtype::f32:
      each.template operator()<float>([](float v) { return v; });
      break;
    case file_dtype::f16:
      each.template operator()<std::uint16_t>([](std::uint16_t b) { return f16::from_bits(b); });
      break;
    case file_dtype::bf16:
      each.template operator()<std::uint16_t>([](std::uint16_t b) { return bf16::from_bits(b); });
      break;
    default:
      break;  // excluded by the caller
  }
}

}  // namespace detail

class checkpoint {
 public:
  /// Opens a `.safetensors` file, a `*.safetensors.index.json` set, or a directory holding
  /// `model.safetensors.index.json` or `model.safetensors`.
  explicit checkpoint(const std::filesystem::path& path)
      : bytes_read_(new std::atomic<std::uint64_t>(0)) {
    namespace fs = std::filesystem;
    fs::path p = path;
    // The error_code forms: a symlink loop or an unsearchable directory is a sentence, not a
    // std::filesystem_error.
    std::error_code ec;
    const fs::file_status st = fs::status(p, ec);
    expect(!ec || ec == std::errc::no_such_file_or_directory, "cannot read checkpoint '{}': {}",
           path.string(), ec.message());
    const auto present = [&](const fs::path& f) {
      std::error_code e;
      const bool there = fs::exists(f, e);
      expect(!e, "cannot read checkpoint '{}': {}", f.string(), e.message());
      return there;
    };
    if (fs::is_directory(st)) {
      if (present(p / "model.safetensors.index.json"))
        p /= "model.safetensors.index.json";
      else if (present(p / "model.safetensors"))
        p /= "model.safetensors";
      else
        fail("{}: the directory holds neither model.safetensors.index.json nor model.safetensors",
             path.string());
    }
    source_ = p;
    if (p.extension() == ".json")
      open_index(p);
    else
      for (const tensor_info& t : files_[add_file(p)].tensors()) where_.emplace(t.name, 0);
  }

  /// The file or index this checkpoint was opened from.
  const std::filesystem::path& source() const noexcept { return source_; }
  /// Every tensor name, sorted.
  std::vector<std::string> names() const {
    std::vector<std::string> n;
    for (const auto& [name, file] : where_) n.push_back(name);
    return n;
  }
  bool contains(std::string_view name) const { return where_.find(name) != where_.end(); }
  /// The header entry of `name`; an error naming the checkpoint if there is none.
  const tensor_info& info(std::string_view name) const { return file_of(name).at(name); }
  /// The file that holds `name`.
  const safetensors_file& file_of(std::string_view name) const {
    const auto it = where_.find(name);
    expect(it != where_.end(), "{}: no tensor named '{}' (the checkpoint holds {} tensors)",
           source_.string(), name, where_.size());
    return files_[it->second];
  }
  std::span<const safetensors_file> files() const noexcept { return files_; }

  /// The block `rank` holds under `p`, after checking that `p` describes the tensor's shape.
  shard::selection select(std::string_view name, const shard::placement& p, int rank) const {
    const tensor_info& t = info(name);
    expect(p.shape == t.shape, "{}: tensor '{}' has shape {} but the placement is for shape {}",
           file_of(name).path().string(), name, shard::shape_text(t.shape),
           shard::shape_text(p.shape));
    return p.of(rank);
  }

  /// Reads the block `sel` of tensor `name` into `out` (row-major, `sel.shape()`), converting the
  /// file's dtype to T (f64, f32, f16 and bf16 convert; other dtypes read only as std::byte, with
  /// T = std::byte meaning the file's own bytes). Returns the bytes read from the file.
  template <class T>
  std::uint64_t read_into(std::string_view name, const shard::selection& sel,
                          std::span<T> out) const {
    static_assert(is_dtype<T> || std::is_same_v<T, std::byte>,
                  "tpx::io::checkpoint: read into double, float, bf16, f16 or std::byte");
    const safetensors_file& f = file_of(name);
    const tensor_info& t = f.at(name);
    const std::string file = f.path().string();
    expect_selection(file, t, sel);
    const std::uint64_t element = size_of(t.dtype);
    if constexpr (std::is_same_v<T, std::byte>) {
      expect(out.size() == static_cast<std::size_t>(sel.size()) * element,
             "{}: tensor '{}': the block {} of {} needs {} bytes but the buffer holds {}", file,
             name, shard::shape_text(sel.shape()), io::name(t.dtype), sel.size() * element,
             out.size());
    } else {
      expect(as_dtype(t.dtype).has_value(),
             "{}: tensor '{}' is {}, which does not convert to {}; read it as std::byte", file,
             name, io::name(t.dtype), tpx::name(dtype_of<T>));
      expect(out.size() == static_cast<std::size_t>(sel.size()),
             "{}: tensor '{}': the block {} needs {} elements but the buffer holds {}", file, name,
             shard::shape_text(sel.shape()), sel.size(), out.size());
    }
    std::uint64_t done = 0;
    detail::for_each_run(t.shape, element, sel, [&](std::uint64_t at, std::uint64_t bytes) {
      const std::span<const std::byte> src = f.data(t, at, bytes);
      if constexpr (std::is_same_v<T, std::byte>)
        std::memcpy(out.data() + done, src.data(), bytes);
      else
        detail::convert_run<T>(t.dtype, src.data(), bytes / element, out.data() + done / element);
      done += bytes;
    });
    bytes_read_->fetch_add(done, std::memory_order_relaxed);
    return done;
  }

  /// The block `sel` of tensor `name` as T.
  template <class T>
  std::vector<T> read(std::string_view name, const shard::selection& sel) const {
    std::vector<T> out(static_cast<std::size_t>(sel.size()) *
                       (std::is_same_v<T, std::byte> ? size_of(info(name).dtype) : 1));
    read_into<T>(name, sel, std::span<T>(out));
    return out;
  }
  /// Rank `rank`'s shard of tensor `name` under placement `p`, as T.
  template <class T>
  std::vector<T> read(std::string_view name, const shard::placement& p, int rank) const {
    return read<T>(name, select(name, p, rank));
  }
  /// The whole tensor `name`, as T.
  template <class T>
  std::vector<T> read(std::string_view name) const {
    return read<T>(name, shard::selection::all(info(name).shape));
  }

  /// Bytes read by every read of this checkpoint so far.
  std::uint64_t bytes_read() const noexcept { return bytes_read_->load(std::memory_order_relaxed); }

 private:
  static void expect_selection(const std::string& file, const tensor_info& t,
                               const shard::selection& sel) {
    expect(sel.dims.size() == t.shape.size(),
           "{}: tensor '{}' has {} dims (shape {}) but the selection has {}", file, t.name,
           t.shape.size(), shard::shape_text(t.shape), sel.dims.size());
    for (std::size_t d = 0; d < sel.dims.size(); ++d)
      for (const shard::interval& p : sel.dims[d].parts)
        expect(0 <= p.begin && p.begin <= p.end && p.end <= t.shape[d],
               "{}: tensor '{}' dim {}: the selection takes [{}, {}) of a dim of size {}", file,
               t.name, d, p.begin, p.end, t.shape[d]);
  }

  void open_index(const std::filesystem::path& index) {
    const std::string file = index.string();
    const nlohmann::json j = read_json_file(index, "safetensors index", duplicate_keys::reject);
    expect(j.is_object() && j.contains("weight_map") && j["weight_map"].is_object(),
           "{}: no \"weight_map\" object", file);
    std::map<std::string, std::vector<std::string>> by_file;
    for (const auto& [name, v] : j["weight_map"].items()) {
      expect(v.is_string(), "{}: tensor '{}': the weight_map entry is not a file name", file, name);
      const std::filesystem::path shard_file = v.get<std::string>();
      const bool plain = !shard_file.empty() && shard_file.is_relative() &&
                         std::none_of(shard_file.begin(), shard_file.end(),
                                      [](const auto& part) { return part == ".."; });
      expect(plain, "{}: tensor '{}' is mapped to \"{}\", which is not a file beside the index",
             file, name, shard_file.string());
      by_file[shard_file.string()].push_back(name);
    }
    for (const auto& [shard_file, names] : by_file) {
      std::size_t id = 0;
      try {
        id = add_file(index.parent_path() / shard_file);
      } catch (const error& e) {
        fail("{}: tensor '{}' is mapped to \"{}\", which cannot be opened: {}", file, names.front(),
             shard_file, e.what());
      }
      for (const std::string& n : names) {
        expect(files_[id].find(n) != nullptr,
               "{}: tensor '{}' is mapped to \"{}\", which holds no tensor of that name", file, n,
               shard_file);
        where_.emplace(n, id);
      }
    }
  }

  /// Opens `path` and returns its position in files_.
  std::size_t add_file(const std::filesystem::path& path) {
    files_.emplace_back(path);
    return files_.size() - 1;
  }

  std::filesystem::path source_;
  std::vector<safetensors_file> files_;
  std::map<std::string, std::size_t, std::less<>> where_;
  std::unique_ptr<std::atomic<std::uint64_t>> bytes_read_;
};

}  // namespace tpx::inline v0::io
