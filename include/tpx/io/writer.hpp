#pragma once
/// \file
/// Writing safetensors files, atomically: the bytes go to a temporary file beside the target,
/// which is flushed to disk and then renamed over the target. A failure at any point removes the
/// temporary file and leaves the target as it was; no reader ever sees a half-written file. A
/// writer killed mid-write cannot clean up: the next write of the same target on the machine
/// removes the temporary files of writers that no longer run.
///
/// Tensors are written sorted by name, each right after the previous one; the header is padded
/// with spaces to a multiple of 8 bytes, so the data section starts aligned. The same tensors and
/// metadata always give the same bytes.

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdint>
#include <cstdlib>
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
#include "tpx/io/dtype.hpp"
#include "tpx/shard/placement.hpp"

namespace tpx::inline v0::io {

/// A tensor as a header describes it: name, dtype, shape.
struct tensor_entry {
  std::string name;
  file_dtype dtype = file_dtype::f32;
  std::vector<index_t> shape;

  /// Bytes of the whole tensor; an error naming it when they do not fit 64 bits.
  std::uint64_t bytes() const {
    return checked_mul(static_cast<std::uint64_t>(shard::element_count(shape, name)),
                       static_cast<std::uint64_t>(size_of(dtype)), name);
  }
};

/// One tensor to write: its entry and its bytes, row-major, in the file's dtype.
struct tensor_bytes : tensor_entry {
  std::span<const std::byte> data;
};

/// A tensor of one of tpx's element types, written in that type.
template <class T>
tensor_bytes as_tensor_bytes(std::string name, std::vector<index_t> shape,
                             std::span<const T> data) {
  static_assert(is_dtype<T>, "tpx::io::as_tensor_bytes: T must be double, float, bf16 or f16");
  return {{std::move(name), to_file_dtype(dtype_of<T>), std::move(shape)}, std::as_bytes(data)};
}

namespace detail {

/// The entries sorted by name, after checking that names are unique and not reserved and that
/// shapes have no negative dim.
template <class Entry>
std::vector<const Entry*> sorted_entries(const std::string& file, std::span<const Entry> entries) {
  std::vector<const Entry*> order;
  std::set<std::string_view> seen;
  for (const Entry& t : entries) {
    expect(t.name != "__metadata__", "{}: '__metadata__' is reserved and cannot name a tensor",
           file);
    expect(seen.insert(t.name).second, "{}: tensor '{}' is given twice", file, t.name);
    expect(std::all_of(t.shape.begin(), t.shape.end(), [](index_t d) { return d >= 0; }),
           "{}: tensor '{}': the shape {} has a negative dim", file, t.name,
           shard::shape_text(t.shape));
    order.push_back(&t);
  }
  std::sort(order.begin(), order.end(),
            [](const Entry* a, const Entry* b) { return a->name < b->name; });
  return order;
}

/// The 8-byte length and the header of a file holding `order`'s tensors one after another.
template <class Entry>
std::string safetensors_head(const std::vector<const Entry*>& order,
                             const std::map<std::string, std::string>& metadata) {
  nlohmann::json head = nlohmann::json::object();
  if (!metadata.empty()) head["__metadata__"] = metadata;
  std::uint64_t offset = 0;
  for (const tensor_entry* t : order) {
    head[t->name] = {{"dtype", std::string(name(t->dtype))},
                     {"shape", t->shape},
                     {"data_offsets", {offset, offset + t->bytes()}}};
    offset += t->bytes();
  }
  std::string text = head.dump();
  text.resize((text.size() + 7) / 8 * 8, ' ');
  std::string out(8, '\0');
  std::uint64_t n = text.size();
  for (char& b : out) {
    b = static_cast<char>(n & 0xFF);
    n >>= 8;
  }
  return out + text;
}

}  // namespace detail

/// Where `write_atomically` sends bytes.
class file_sink {
 public:
  file_sink(int fd, const std::filesystem::path& target) : fd_(fd), target_(&target) {}
  void write(std::span<const std::byte> bytes) {
    while (!bytes.empty()) {
      const ::ssize_t n = ::write(fd_, bytes.data(), bytes.size());
      if (n < 0 && errno == EINTR) continue;
      expect(n > 0, "{}: cannot write the file: {}", target_->string(),
             n < 0 ? std::strerror(errno) : "no progress");
      bytes = bytes.subspan(static_cast<std::size_t>(n));
      written_ += static_cast<std::uint64_t>(n);
    }
  }
  std::uint64_t written() const noexcept { return written_; }

 private:
  int fd_;
  const std::filesystem::path* target_;
  std::uint64_t written_ = 0;
};

namespace detail {

/// "<file>.tmp.<host>.<pid>.": the start of the temporary files this process writes for `file`.
inline std::string temp_prefix(const std::string& file, std::string_view host, long pid) {
  return fmt::format("{}.tmp.{}.{}.", file, host, pid);
}

/// This machine's name (for temporary files; "host" if it has none).
inline std::string host_name() {
  char name[256] = {};
  if (::gethostname(name, sizeof name - 1) != 0 || name[0] == '\0') return "host";
  for (char& ch : name)
    if (ch == '/') ch = '_';
  return name;
}

/// Removes the temporary files a writer of `file` on this machine left in `dir` when it was
/// killed mid-write: "<file>.tmp.<host>.<pid>.*" whose process no longer exists. Files of live
/// processes and of other machines (a shared filesystem) are left alone. Best effort.
inline void remove_stale_temps(const std::filesystem::path& dir, const std::string& file,
                               const std::string& host) {
  const std::string prefix = fmt::format("{}.tmp.{}.", file, host);
  std::error_code ec;
  for (std::filesystem::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (!name.starts_with(prefix)) continue;
    long pid = 0;
    const char* digits = name.c_str() + prefix.size();
    const auto [rest, parsed] = std::from_chars(digits, name.c_str() + name.size(), pid);
    if (parsed != std::errc() || rest == digits || *rest != '.' || pid <= 0) continue;
    if (::kill(static_cast<pid_t>(pid), 0) == 0 || errno != ESRCH) continue;  // alive, or not ours
    std::error_code ignored;
    std::filesystem::remove(it->path(), ignored);
  }
}

}  // namespace detail

/// Runs `body(file_sink&)` into a temporary file beside `path`, then renames it over `path`.
/// Creates `path`'s directory (and its parents) when missing. The temporary file is
/// "<name>.tmp.<host>.<pid>.XXXXXX"; those a killed writer on this machine left are removed
/// first.
template <class Body>
void write_atomically(const std::filesystem::path& path, Body&& body) {
  const std::filesystem::path dir = path.has_parent_path() ? path.parent_path() : ".";
  if (std::error_code ec; !std::filesystem::is_directory(dir, ec)) {
    std::filesystem::create_directories(dir, ec);
    expect(!ec, "{}: cannot create the directory {}: {}", path.string(), dir.string(),
           ec.message());
  }
  const std::string host = detail::host_name();
  detail::remove_stale_temps(dir, path.filename().string(), host);
  std::string temp =
      (dir / (detail::temp_prefix(path.filename().string(), host, ::getpid()) + "XXXXXX")).string();
  const int fd = ::mkstemp(temp.data());
  expect(fd >= 0, "{}: cannot create a temporary file in {}: {}", path.string(), dir.string(),
         std::strerror(errno));
  struct cleanup {
    int fd;
    const std::string& temp;
    bool keep = false;
    ~cleanup() {
      if (fd >= 0) ::close(fd);
      if (!keep) ::unlink(temp.c_str());
    }
  } guard{fd, temp};
  file_sink sink(fd, path);
  body(sink);
  expect(::fchmod(fd, 0644) == 0 && ::fsync(fd) == 0, "{}: cannot flush the file: {}",
         path.string(), std::strerror(errno));
  const int closed = ::close(guard.fd);
  guard.fd = -1;
  expect(closed == 0, "{}: cannot close the file: {}", path.string(), std::strerror(errno));
  expect(::rename(temp.c_str(), path.c_str()) == 0, "{}: cannot rename {} over it: {}",
         path.string(), temp, std::strerror(errno));
  guard.keep = true;
  if (const int d = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC); d >= 0) {
    ::fsync(d);  // make the rename durable; best effort
    ::close(d);
  }
}

/// Writes a safetensors file at `path` atomically. Errors name the file and the tensor: a name
/// given twice or reserved, a byte count that disagrees with shape × dtype size.
inline void save_safetensors(const std::filesystem::path& path,
                             std::span<const tensor_bytes> tensors,
                             const std::map<std::string, std::string>& metadata = {}) {
  const std::string file = path.string();
  const std::vector<const tensor_bytes*> order = detail::sorted_entries(file, tensors);
  for (const tensor_bytes* t : order)
    expect(t->data.size() == t->bytes(),
           "{}: tensor '{}': {} bytes given but shape {} of {} needs {} bytes", file, t->name,
           t->data.size(), shard::shape_text(t->shape), name(t->dtype), t->bytes());
  const std::string head = detail::safetensors_head(order, metadata);
  write_atomically(path, [&](file_sink& out) {
    out.write(std::as_bytes(std::span<const char>(head)));
    for (const tensor_bytes* t : order) out.write(t->data);
  });
}

}  // namespace tpx::inline v0::io
