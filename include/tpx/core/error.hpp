#pragma once
/// \file
/// The one exception type of tpx (and `peer_error`, its form for a rank that stops because another
/// rank failed), and the helpers that throw it with an fmt-formatted sentence.

#include <fmt/format.h>

#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "tpx/version.hpp"

namespace tpx::inline v0 {

/// Thrown for every run-time failure tpx detects: bad shapes, bad splits, mismatched collective
/// calls, bad files. The message is one sentence that names the tensor, the dim, the sizes and
/// the rule that was broken.
///
/// A group runner (`host::run`) that rethrows a rank's error attaches what the other ranks
/// reported as `notes()`, one "rank r: message" each.
class error : public std::runtime_error {
 public:
  explicit error(const std::string& what) : std::runtime_error(what) {}

  /// What the other ranks of the group reported when this error was rethrown as the cause.
  std::span<const std::string> notes() const noexcept {
    return notes_ ? std::span<const std::string>(*notes_) : std::span<const std::string>();
  }
  void add_note(std::string note) {
    if (!notes_) notes_ = std::make_shared<std::vector<std::string>>();
    notes_->push_back(std::move(note));
  }

 private:
  std::shared_ptr<std::vector<std::string>> notes_;  // shared: copying an exception never throws
};

/// Thrown by a rank that stops because another rank failed, naming that rank (io::save's "rank 0
/// could not write the checkpoint"): not a cause. A group runner rethrows the error a rank raised
/// because of its own work before any of these.
class peer_error : public error {
 public:
  using error::error;
};

namespace detail {
/// The last component of a source file's path (`std::source_location::file_name()`), for the
/// file:line of a checked call's message. (It takes the path, not the location: clang 14 with
/// libstdc++ 12, the fuzzers' compiler, has no std::source_location.)
inline std::string_view file_name(std::string_view path) {
  const std::size_t slash = path.find_last_of('/');
  return slash == std::string_view::npos ? path : path.substr(slash + 1);
}
}  // namespace detail

/// Throws `tpx::error` with a message formatted by fmt.
template <class... Args>
[[noreturn]] void fail(fmt::format_string<Args...> format, Args&&... args) {
  throw error(fmt::format(format, std::forward<Args>(args)...));
}

/// Throws `tpx::error` with the formatted message unless `condition` holds.
template <class... Args>
constexpr void expect(bool condition, fmt::format_string<Args...> format, Args&&... args) {
  if (!condition) fail(format, std::forward<Args>(args)...);
}

/// The most ranks a group (tp, ep) may have: far past any machine, small enough that per-rank
/// tables stay small.
inline constexpr int max_ranks = 65536;

/// Checks a group size: 1 ≤ tp ≤ max_ranks.
inline void expect_group_size(int tp, std::string_view where) {
  expect(tp >= 1, "{}: tp must be at least 1, got tp = {}", where, tp);
  expect(tp <= max_ranks, "{}: tp = {} is more than the {} ranks tpx plans for", where, tp,
         max_ranks);
}

/// a × b for sizes and counts, or an error naming `what` when it overflows 64 bits.
template <class T>
constexpr T checked_mul(T a, T b, std::string_view what) {
  T r{};
  expect(!__builtin_mul_overflow(a, b, &r), "{}: {} × {} overflows 64 bits", what, a, b);
  return r;
}
/// a + b for sizes and counts, or an error naming `what` when it overflows 64 bits.
template <class T>
constexpr T checked_add(T a, T b, std::string_view what) {
  T r{};
  expect(!__builtin_add_overflow(a, b, &r), "{}: {} + {} overflows 64 bits", what, a, b);
  return r;
}

/// Checks a rank against its group size: 0 <= rank < tp.
inline void expect_rank(int rank, int tp, std::string_view where) {
  expect_group_size(tp, where);
  expect(rank >= 0 && rank < tp,
         "{}: rank {} is outside the group of tp = {} ranks (0 ≤ rank < tp)", where, rank, tp);
}

}  // namespace tpx::inline v0
