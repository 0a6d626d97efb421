#pragma once
/// \file
/// Opening the files tpx reads: `regular_file` opens without blocking (a FIFO, socket or device
/// given as a checkpoint or config never stalls in open()) and refuses anything but a regular
/// file; `read_json_file` reads a whole JSON file of bounded size and parses it with the one
/// parser (core/json.hpp). Errors name what the file is for, its path and the reason.

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <string>
#include <string_view>
#include <utility>

#include <nlohmann/json.hpp>

#include "tpx/core/error.hpp"
#include "tpx/core/json.hpp"

namespace tpx::inline v0::io {

/// The largest JSON file tpx reads (configs, plans, safetensors indexes are far smaller).
inline constexpr std::uint64_t max_json_file_bytes = std::uint64_t{256} << 20;

/// A regular file open for reading: its descriptor and its size when opened.
class regular_file {
 public:
  /// Opens `path`; `what` says what it is for ("config", "checkpoint").
  regular_file(const std::filesystem::path& path, std::string_view what) {
    fd_ = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd_ < 0) {
      const int e = errno;
      fail("cannot read {} '{}': {}", what, path.string(),
           e == ENOENT ? std::string("no such file") : std::string(std::strerror(e)));
    }
    struct ::stat st {};
    if (::fstat(fd_, &st) != 0) {
      const int e = errno;
      close();
      fail("cannot read {} '{}': cannot stat it: {}", what, path.string(), std::strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
      close();
      fail("cannot read {} '{}': it is not a regular file ({})", what, path.string(),
           S_ISDIR(st.st_mode)    ? "a directory"
           : S_ISFIFO(st.st_mode) ? "a FIFO"
           : S_ISSOCK(st.st_mode) ? "a socket"
                                  : "a device or other special file");
    }
    size_ = static_cast<std::uint64_t>(st.st_size);
  }
  regular_file(regular_file&& o) noexcept
      : fd_(std::exchange(o.fd_, -1)), size_(std::exchange(o.size_, 0)) {}
  regular_file& operator=(regular_file&&) = delete;
  regular_file(const regular_file&) = delete;
  regular_file& operator=(const regular_file&) = delete;
  ~regular_file() { close(); }

  int fd() const noexcept { return fd_; }
  std::uint64_t size() const noexcept { return size_; }

 private:
  void close() noexcept {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }
  int fd_ = -1;
  std::uint64_t size_ = 0;
};

/// The whole text of `path`, at most `limit` bytes. A file that shrinks while it is read is an
/// error, not a short text.
inline std::string read_text_file(const std::filesystem::path& path, std::string_view what,
                                  std::uint64_t limit = max_json_file_bytes) {
  const regular_file f(path, what);
  expect(f.size() <= limit, "cannot read {} '{}': it is {} bytes, more than the {} tpx reads", what,
         path.string(), f.size(), limit);
  std::string text(static_cast<std::size_t>(f.size()), '\0');
  std::uint64_t done = 0;
  while (done < f.size()) {
    const ::ssize_t n =
        ::pread(f.fd(), text.data() + done, f.size() - done, static_cast<::off_t>(done));
    if (n < 0 && errno == EINTR) continue;
    expect(n > 0, "cannot read {} '{}': {}", what, path.string(),
           n < 0 ? std::strerror(errno) : "the file was truncated while it was read");
    done += static_cast<std::uint64_t>(n);
  }
  return text;
}

/// Reads and parses the JSON file `path` (`what` names it in errors: "config '…' is not valid
/// JSON (…)").
inline nlohmann::json read_json_file(const std::filesystem::path& path, std::string_view what,
                                     duplicate_keys duplicates = duplicate_keys::keep_last) {
  return parse_json(read_text_file(path, what), fmt::format("{} '{}'", what, path.string()),
                    duplicates);
}

}  // namespace tpx::inline v0::io
