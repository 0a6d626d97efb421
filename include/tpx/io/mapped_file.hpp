#pragma once
/// \file
/// A read-only memory mapping of a whole file (POSIX), with bounds-checked access. Reading a
/// range touches only the pages of that range, so a rank that copies its shard out of the mapping
/// reads only its shard's bytes from the page cache or the disk.
///
/// The mapping is shared by every thread that reads the file. A file truncated by another process
/// while it is mapped makes later access to the lost pages fault (SIGBUS); tpx checks every range
/// against the size the file had when it was opened.

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <span>
#include <utility>

#include "tpx/core/error.hpp"

namespace tpx::inline v0::io {

class mapped_file {
 public:
  /// Maps `path` read-only. Errors name the file and the system's reason.
  explicit mapped_file(std::filesystem::path path) : path_(std::move(path)) {
    const int fd = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
    expect(fd >= 0, "{}: cannot open the file: {}", path_.string(), std::strerror(errno));
    struct ::stat st {};
    if (::fstat(fd, &st) != 0) {
      const int e = errno;
      ::close(fd);
      fail("{}: cannot stat the file: {}", path_.string(), std::strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
      ::close(fd);
      fail("{}: not a regular file", path_.string());
    }
    size_ = static_cast<std::uint64_t>(st.st_size);
    if (size_ > 0) {
      void* p = ::mmap(nullptr, size_, PROT_READ, MAP_SHARED, fd, 0);
      const int e = errno;
      ::close(fd);
      expect(p != MAP_FAILED, "{}: cannot map the file's {} bytes: {}", path_.string(), size_,
             std::strerror(e));
      data_ = static_cast<const std::byte*>(p);
    } else {
      ::close(fd);
    }
  }
  mapped_file(mapped_file&& o) noexcept
      : path_(std::move(o.path_)),
        data_(std::exchange(o.data_, nullptr)),
        size_(std::exchange(o.size_, 0)) {}
  mapped_file& operator=(mapped_file&& o) noexcept {
    if (this != &o) {
      unmap();
      path_ = std::move(o.path_);
      data_ = std::exchange(o.data_, nullptr);
      size_ = std::exchange(o.size_, 0);
    }
    return *this;
  }
  mapped_file(const mapped_file&) = delete;
  mapped_file& operator=(const mapped_file&) = delete;
  ~mapped_file() { unmap(); }

  const std::filesystem::path& path() const noexcept { return path_; }
  /// Bytes in the file when it was opened.
  std::uint64_t size() const noexcept { return size_; }

  /// The bytes [offset, offset + count); errors if the range leaves the file.
  std::span<const std::byte> bytes(std::uint64_t offset, std::uint64_t count) const {
    expect(offset <= size_ && count <= size_ - offset,
           "{}: bytes [{}, {}) lie beyond the end of the file ({} bytes)", path_.string(), offset,
           offset + count, size_);
    return {data_ + offset, static_cast<std::size_t>(count)};
  }

 private:
  void unmap() noexcept {
    if (data_ != nullptr) ::munmap(const_cast<std::byte*>(data_), size_);
    data_ = nullptr;
  }

  std::filesystem::path path_;
  const std::byte* data_ = nullptr;
  std::uint64_t size_ = 0;
};

}  // namespace tpx::inline v0::io
