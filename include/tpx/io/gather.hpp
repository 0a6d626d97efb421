#pragma once
/// \file
/// From every rank's shards back to full tensors in checkpoint layout, and a full checkpoint saved
/// from a sharded model.
///
///   rank r holds shard_r = the block placement.of(r) of a tensor (row-major)
///   gather:  all-gather of the shards, each written back at its pieces → the full tensor
///            (packed and interleaved pieces included; a piece several ranks hold is taken from
///            the lowest of them)
///   save:    tensors gathered one at a time in name order and streamed by rank `root` into one
///            safetensors file, written atomically
///
/// Shards are moved as bytes, so any dtype round-trips bit for bit.

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "tpx/comm/collectives.hpp"
#include "tpx/io/writer.hpp"

namespace tpx::inline v0::io {

/// One rank's shard of a tensor: the tensor's entry (its full shape), its placement over the
/// group, and the rank's block as bytes.
struct shard_bytes : tensor_entry {
  shard::placement placement;
  std::span<const std::byte> local;
};

/// A shard of one of tpx's element types.
template <class T>
shard_bytes as_shard_bytes(std::string name, shard::placement p, std::span<const T> local) {
  static_assert(is_dtype<T>, "tpx::io::as_shard_bytes: T must be double, float, bf16 or f16");
  std::vector<index_t> shape = p.shape;
  return {{std::move(name), to_file_dtype(dtype_of<T>), std::move(shape)},
          std::move(p),
          std::as_bytes(local)};
}

namespace detail {

/// Errors unless `s` is a well-formed shard for rank `rank` of a group of `tp`.
inline void expect_shard(const shard_bytes& s, int rank, int tp) {
  const shard::placement& p = s.placement;
  expect(p.shape == s.shape, "gather: tensor '{}' has shape {} but its placement is for {}", s.name,
         shard::shape_text(s.shape), shard::shape_text(p.shape));
  expect(p.is_replicated() || p.partition.ranks() == tp,
         "gather: tensor '{}' is partitioned over {} ranks but the group has {}", s.name,
         p.partition.ranks(), tp);
  const std::vector<index_t> local = p.local_shape(rank);
  const std::uint64_t want =
      static_cast<std::uint64_t>(shard::element_count(local)) * size_of(s.dtype);
  expect(s.local.size() == want,
         "gather: tensor '{}': rank {} holds {} bytes but its block {} of {} needs {} bytes",
         s.name, rank, s.local.size(), shard::shape_text(local), name(s.dtype), want);
}

}  // namespace detail

/// The full tensor rebuilt from every rank's shard `s` (every rank passes its own); every rank
/// gets it, in the file's layout.
template <class Comm>
std::vector<std::byte> gather(Comm& c, const shard_bytes& s) {
  detail::expect_shard(s, c.rank(), c.size());
  const shard::placement& p = s.placement;
  std::vector<std::byte> full(static_cast<std::size_t>(s.bytes()));
  if (p.is_replicated() || full.empty()) {
    std::copy(s.local.begin(), s.local.end(), full.begin());
    return full;
  }
  // View the tensor as [outer, shape[dim] · inner]: the split dim's pieces become column pieces
  // `inner` bytes wide (rows pieces when outer = 1).
  const auto d = static_cast<std::size_t>(p.dim);
  index_t outer = 1, inner = static_cast<index_t>(size_of(s.dtype));
  for (std::size_t i = 0; i < p.shape.size(); ++i) {
    if (i < d) outer *= p.shape[i];
    if (i > d) inner *= p.shape[i];
  }
  const index_t held = p.partition.of(c.rank()).size();
  const std::span<const std::byte> local = s.local;
  if (outer == 1) {
    std::vector<std::byte> scratch(
        static_cast<std::size_t>(comm::rows_scratch(inner, p.partition)));
    comm::all_gather_rows<Comm, std::byte>(c, make_matrix(local.data(), held, inner),
                                           make_matrix(full.data(), p.shape[d], inner), p.partition,
                                           scratch);
  } else {
    const shard::partition bytes = p.partition.scaled(inner);
    std::vector<std::byte> scratch(static_cast<std::size_t>(comm::cols_scratch(outer, bytes)));
    comm::all_gather_cols<Comm, std::byte>(c, make_matrix(local.data(), outer, held * inner),
                                           make_matrix(full.data(), outer, bytes.extent()), bytes,
                                           scratch);
  }
  return full;
}

/// Gathers every shard and saves the full checkpoint at `path` from rank `root`, atomically.
/// Every rank passes its own shards of the same tensors in the same order. All ranks return once
/// the file is in place, or all throw: a rank's bad shard, a disagreement between ranks over the
/// tensors, and a failed write are errors on every rank.
template <class Comm>
void save(Comm& c, const std::filesystem::path& path, std::span<const shard_bytes> shards,
          const std::map<std::string, std::string>& metadata = {}, int root = 0) {
  expect_rank(root, c.size(), "io::save root");
  const std::string file = path.string();
  // Agree before any gather: every rank's shards are well formed and describe the same tensors.
  std::optional<std::string> bad;
  std::vector<const shard_bytes*> order;
  try {
    order = detail::sorted_entries(file, shards);
    for (const shard_bytes& s : shards) detail::expect_shard(s, c.rank(), c.size());
  } catch (const error& e) {
    bad = e.what();
  }
  std::uint64_t h = 1469598103934665603ull;  // FNV-1a over names, dtypes, shapes, placements
  const auto mix = [&](std::string_view bytes) {
    for (const char ch : bytes) h = (h ^ static_cast<unsigned char>(ch)) * 1099511628211ull;
  };
  const auto mix_index = [&](index_t v) {
    mix(std::string_view(reinterpret_cast<const char*>(&v), sizeof v));
  };
  for (const shard_bytes& s : shards) {
    mix(s.name);
    mix(name(s.dtype));
    mix(shard::shape_string(s.shape));
    mix_index(s.placement.dim);
    if (s.placement.is_replicated()) continue;
    for (int r = 0; r < s.placement.partition.ranks(); ++r) {
      mix_index(r);
      for (const shard::interval& piece : s.placement.partition.of(r).parts) {
        mix_index(piece.begin);
        mix_index(piece.end);
      }
    }
  }
  const auto signature = static_cast<std::int64_t>(h >> 1);
  std::vector<std::int64_t> agree{signature, -signature, bad ? 1 : 0};
  c.all_reduce(std::span<std::int64_t>(agree), comm::reduce_op::max);
  if (bad) throw error(*bad);
  if (agree[2] != 0)
    throw peer_error(
        fmt::format("{}: another rank's shards are not well formed; nothing was saved", file));
  expect(agree[0] == signature && -agree[1] == signature,
         "{}: the ranks pass different tensors (names, dtypes, shapes or placements disagree); "
         "nothing was saved",
         file);

  std::size_t next = 0;
  const auto gather_next = [&] { return gather(c, *order[next++]); };
  std::optional<std::string> failed;
  if (c.rank() == root) {
    try {
      const std::string head = detail::safetensors_head(order, metadata);
      write_atomically(path, [&](file_sink& out) {
        std::optional<std::string> write_error;
        out.write(std::as_bytes(std::span<const char>(head)));
        while (next < order.size()) {
          const std::vector<std::byte> full = gather_next();
          if (write_error) continue;
          try {
            out.write(full);
          } catch (const error& e) {
            write_error = e.what();  // keep gathering: the other ranks are in the collectives
          }
        }
        if (write_error) throw error(*write_error);
      });
    } catch (const error& e) {
      failed = e.what();
    }
  }
  while (next < order.size()) gather_next();
  std::vector<std::int64_t> status{failed ? 1 : 0};
  c.broadcast(std::span<std::int64_t>(status), root);
  if (failed) throw error(*failed);
  if (status[0] != 0)
    throw peer_error(
        fmt::format("{}: rank {} could not write the checkpoint; nothing was saved", file, root));
}

}  // namespace tpx::inline v0::io
