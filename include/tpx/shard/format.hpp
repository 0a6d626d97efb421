#pragma once
/// \file
/// Opt-in fmt formatters for the shard math's value types, with the core's: intervals print as
/// "[0, 3)".

#include <fmt/format.h>

#include "tpx/core/format.hpp"
#include "tpx/shard/split.hpp"

template <>
struct fmt::formatter<tpx::shard::interval> : fmt::formatter<std::string_view> {
  template <class Ctx>
  auto format(const tpx::shard::interval& i, Ctx& ctx) const {
    return fmt::format_to(ctx.out(), "[{}, {})", i.begin, i.end);
  }
};
