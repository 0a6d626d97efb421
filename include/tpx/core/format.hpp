#pragma once
/// \file
/// Opt-in fmt formatters for tpx's value types: include this header to format extents, intervals
/// and dtypes with fmt ("[4 × 8]", "[0, 3)", "bf16"). The core never includes it.

#include <fmt/format.h>

#include "tpx/core/dtype.hpp"
#include "tpx/core/extents.hpp"
#include "tpx/shard/split.hpp"

template <std::size_t Rank>
struct fmt::formatter<tpx::extents<Rank>> : fmt::formatter<std::string_view> {
  template <class Ctx>
  auto format(const tpx::extents<Rank>& e, Ctx& ctx) const {
    auto out = fmt::format_to(ctx.out(), "[");
    for (std::size_t d = 0; d < Rank; ++d) out = fmt::format_to(out, "{}{}", d ? " × " : "", e[d]);
    return fmt::format_to(out, "]");
  }
};

template <>
struct fmt::formatter<tpx::shard::interval> : fmt::formatter<std::string_view> {
  template <class Ctx>
  auto format(const tpx::shard::interval& i, Ctx& ctx) const {
    return fmt::format_to(ctx.out(), "[{}, {})", i.begin, i.end);
  }
};

template <>
struct fmt::formatter<tpx::dtype> : fmt::formatter<std::string_view> {
  template <class Ctx>
  auto format(tpx::dtype t, Ctx& ctx) const {
    return fmt::formatter<std::string_view>::format(tpx::name(t), ctx);
  }
};
