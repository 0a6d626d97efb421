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
#include "tpx/io/file.hpp"

namespace tpx::inline v0::io {

class mapped_file {
 public:
  /// Maps `path` read-only. Errors name the file and the system's reason.
  explicit mapped_file(std::filesystem::path path) : path_(std::move(path)) {
    const regular_file f(path_, "file");  // never blocks on a FIFO; refuses special files
    size_ = f.size();
    if (size_ > 0) {
      void* p = ::mmap(nullptr, size_, PROT_READ, MAP_SHARED, f.fd(), 0);
      expect(p != MAP_FAILED, "{}: cannot map the file's {} bytes: {}", path_.string(), size_,
             std::strerror(errno));
      data_ = static_cast<const std::byte*>(p);
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
           "{}: bytes [{}, {}) lie beyond the end of the file ({} bytes)", path_.native(), offset,
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
