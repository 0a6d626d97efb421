#pragma once
// The message a test's code ends with: what its tpx::error says, or "no error".

#include <functional>
#include <string>

#include "tpx/core/error.hpp"

namespace tpx::test {

inline std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const tpx::error& e) {
    return e.what();
  }
  return "no error";
}

}  // namespace tpx::test
