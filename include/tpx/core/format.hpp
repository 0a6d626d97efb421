#pragma once
/// \file
/// Opt-in fmt formatters for the core's value types: include this header to format extents and
/// dtypes with fmt ("[4 × 8]", "bf16"); `shard/format.hpp` adds intervals. The core never
/// includes it.

#include <fmt/format.h>

#include "tpx/core/dtype.hpp"
#include "tpx/core/extents.hpp"

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
struct fmt::formatter<tpx::dtype> : fmt::formatter<std::string_view> {
  template <class Ctx>
  auto format(tpx::dtype t, Ctx& ctx) const {
    return fmt::formatter<std::string_view>::format(tpx::name(t), ctx);
  }
};
