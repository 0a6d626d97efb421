#pragma once
/// \file
/// The one exception type of tpx, and the helper that throws it with an fmt-formatted sentence.

#include <fmt/format.h>

#include <stdexcept>
#include <string>
#include <utility>

#include "tpx/version.hpp"

namespace tpx::inline v0 {

/// Thrown for every run-time failure tpx detects: bad shapes, bad splits, mismatched collective
/// calls, bad files. The message is one sentence that names the tensor, the dim, the sizes and
/// the rule that was broken.
class error : public std::runtime_error {
 public:
  explicit error(const std::string& what) : std::runtime_error(what) {}
};

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

/// Checks a group size: `tp` must be at least 1.
inline void expect_group_size(int tp, std::string_view where) {
  expect(tp >= 1, "{}: tp must be at least 1, got tp = {}", where, tp);
}

/// Checks a rank against its group size: 0 <= rank < tp.
inline void expect_rank(int rank, int tp, std::string_view where) {
  expect_group_size(tp, where);
  expect(rank >= 0 && rank < tp,
         "{}: rank {} is outside the group of tp = {} ranks (0 ≤ rank < tp)", where, rank, tp);
}

}  // namespace tpx::inline v0
