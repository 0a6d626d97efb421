#pragma once
/// \file
/// One safetensors file: its header parsed and checked, its data mapped.
///
///   [ N: u64 little-endian ][ N bytes of JSON header ][ data … ]
///   header = { name: {"dtype": "BF16", "shape": [..], "data_offsets": [begin, end]}, …,
///              "__metadata__": {string: string} }
///
/// Offsets count from the first data byte. Every check happens when the file is opened, so that no
/// later read can leave the file: the header length fits the file; every entry has a known dtype,
/// a shape of non-negative integers and two offsets with begin ≤ end ≤ the data size;
/// end − begin = elements × dtype size; no two tensors overlap; no name appears twice. Each
/// failure is a `tpx::error` naming the file and the tensor.

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <map>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "tpx/core/error.hpp"
#include "tpx/core/json.hpp"
#include "tpx/io/dtype.hpp"
#include "tpx/io/mapped_file.hpp"
#include "tpx/shard/placement.hpp"

namespace tpx::inline v0::io {

/// One tensor as a header describes it.
struct tensor_info {
  std::string name;
  file_dtype dtype = file_dtype::f32;
  std::vector<index_t> shape;
  std::uint64_t begin = 0;  ///< data_offsets[0], from the first data byte
  std::uint64_t end = 0;    ///< data_offsets[1]

  index_t size() const { return shard::element_count(shape); }
  std::uint64_t bytes() const noexcept { return end - begin; }
};

/// The largest header tpx accepts (the limit of the reference implementation).
inline constexpr std::uint64_t max_header_bytes = 100'000'000;

namespace detail {

inline tensor_info parse_entry(std::string_view file, const std::string& name,
                               const nlohmann::json& v, std::uint64_t data_size) {
  tensor_info t;
  t.name = name;
  expect(v.is_object(), "{}: tensor '{}': the header entry is not an object", file, name);
  const auto dt = v.find("dtype");
  expect(dt != v.end() && dt->is_string(), "{}: tensor '{}': no \"dtype\" string", file, name);
  const auto type = parse_file_dtype(dt->get<std::string>());
  expect(type.has_value(), "{}: tensor '{}': unknown dtype \"{}\" (known: {})", file, name,
         dt->get<std::string>(), known_file_dtypes());
  t.dtype = *type;

  const auto shape = v.find("shape");
  expect(shape != v.end() && shape->is_array(), "{}: tensor '{}': no \"shape\" array", file, name);
  std::uint64_t bytes = size_of(t.dtype);
  for (const nlohmann::json& d : *shape) {
    expect(
        d.is_number_unsigned() && d.get<std::uint64_t>() <= static_cast<std::uint64_t>(INT64_MAX),
        "{}: tensor '{}': the shape {} holds something other than a non-negative integer", file,
        name, shape->dump());
    t.shape.push_back(static_cast<index_t>(d.get<std::uint64_t>()));
    bytes = checked_mul(bytes, d.get<std::uint64_t>(),
                        fmt::format("{}: tensor '{}': the shape's byte size", file, name));
  }

  const auto off = v.find("data_offsets");
  expect(off != v.end() && off->is_array() && off->size() == 2 && (*off)[0].is_number_unsigned() &&
             (*off)[1].is_number_unsigned(),
         "{}: tensor '{}': \"data_offsets\" must be two non-negative integers [begin, end]", file,
         name);
  t.begin = (*off)[0].get<std::uint64_t>();
  t.end = (*off)[1].get<std::uint64_t>();
  expect(t.begin <= t.end && t.end <= data_size,
         "{}: tensor '{}': data_offsets [{}, {}] lie outside the data section of {} bytes (need "
         "begin ≤ end ≤ {})",
         file, name, t.begin, t.end, data_size, data_size);
  expect(t.end - t.begin == bytes,
         "{}: tensor '{}': data_offsets [{}, {}] hold {} bytes but shape {} of {} needs {} bytes",
         file, name, t.begin, t.end, t.end - t.begin, shard::shape_text(t.shape),
         io::name(t.dtype), bytes);
  return t;
}

}  // namespace detail

/// A parsed, checked header.
struct header {
  std::uint64_t data_offset = 0;     ///< where the data section starts in the file: 8 + N
  std::vector<tensor_info> tensors;  ///< sorted by name
  std::map<std::string, std::string> metadata;

  /// The tensor named `name`, or nullptr.
  const tensor_info* find(std::string_view name) const {
    const auto it =
        std::lower_bound(tensors.begin(), tensors.end(), name,
                         [](const tensor_info& t, std::string_view n) { return t.name < n; });
    return it != tensors.end() && it->name == name ? &*it : nullptr;
  }
};

/// Parses the header text of `file`, whose data section holds `data_size` bytes.
inline header parse_header(std::string_view file, std::string_view text, std::uint64_t data_size) {
  header h;
  const nlohmann::json j = parse_json(text, file, duplicate_keys::reject);
  expect(j.is_object(), "{}: the header is not a JSON object", file);
  for (const auto& [name, v] : j.items()) {
    if (name == "__metadata__") {
      expect(v.is_object(), "{}: \"__metadata__\" is not an object", file);
      for (const auto& [key, value] : v.items()) {
        expect(value.is_string(), "{}: \"__metadata__\" entry '{}' is not a string", file, key);
        h.metadata.emplace(key, value.get<std::string>());
      }
      continue;
    }
    h.tensors.push_back(detail::parse_entry(file, name, v, data_size));
  }
  std::sort(h.tensors.begin(), h.tensors.end(),
            [](const tensor_info& a, const tensor_info& b) { return a.name < b.name; });

  std::vector<const tensor_info*> by_offset;
  for (const tensor_info& t : h.tensors)
    if (t.bytes() > 0) by_offset.push_back(&t);
  std::sort(by_offset.begin(), by_offset.end(),
            [](const tensor_info* a, const tensor_info* b) { return a->begin < b->begin; });
  for (std::size_t i = 1; i < by_offset.size(); ++i) {
    const tensor_info& a = *by_offset[i - 1];
    const tensor_info& b = *by_offset[i];
    expect(b.begin >= a.end,
           "{}: tensor '{}': data_offsets [{}, {}] overlap those of tensor '{}' [{}, {}]", file,
           b.name, b.begin, b.end, a.name, a.begin, a.end);
  }
  return h;
}

/// A safetensors file, opened and checked.
class safetensors_file {
 public:
  explicit safetensors_file(std::filesystem::path path) : map_(std::move(path)) {
    const std::string file = map_.path().string();
    expect(map_.size() >= 8, "{}: truncated: {} bytes, fewer than the 8-byte header length", file,
           map_.size());
    std::uint64_t n = 0;
    const std::span<const std::byte> len = map_.bytes(0, 8);
    for (int i = 7; i >= 0; --i)
      n = (n << 8) | std::to_integer<std::uint64_t>(len[static_cast<std::size_t>(i)]);
    expect(n <= map_.size() - 8,
           "{}: the header length {} runs past the end of the file ({} bytes after the length)",
           file, n, map_.size() - 8);
    expect(n <= max_header_bytes, "{}: the header length {} exceeds the limit of {} bytes", file, n,
           max_header_bytes);
    const std::span<const std::byte> text = map_.bytes(8, n);
    header_ = parse_header(file, {reinterpret_cast<const char*>(text.data()), text.size()},
                           map_.size() - 8 - n);
    header_.data_offset = 8 + n;
  }

  const std::filesystem::path& path() const noexcept { return map_.path(); }
  std::uint64_t file_size() const noexcept { return map_.size(); }
  const header& head() const noexcept { return header_; }
  std::span<const tensor_info> tensors() const noexcept { return header_.tensors; }
  const std::map<std::string, std::string>& metadata() const noexcept { return header_.metadata; }
  const tensor_info* find(std::string_view name) const { return header_.find(name); }
  /// The tensor named `name`; an error naming the file if it holds none.
  const tensor_info& at(std::string_view name) const {
    const tensor_info* t = find(name);
    expect(t != nullptr, "{}: no tensor named '{}' (the file holds {} tensors)", path().string(),
           name, header_.tensors.size());
    return *t;
  }
  /// Bytes [offset, offset + count) of tensor `t`'s data.
  std::span<const std::byte> data(const tensor_info& t, std::uint64_t offset,
                                  std::uint64_t count) const {
    expect(offset <= t.bytes() && count <= t.bytes() - offset,
           "{}: tensor '{}': bytes [{}, {}) lie outside its {} bytes", path().native(), t.name,
           offset, offset + count, t.bytes());
    return map_.bytes(header_.data_offset + t.begin + offset, count);
  }

 private:
  mapped_file map_;
  header header_;
};

}  // namespace tpx::inline v0::io
