// Shard-on-read and gather-for-save: every rank reads exactly its shard's bytes, a layer built
// from that shard equals one built from the full weight, and gathering the shards and saving
// gives back the original file bit for bit — for every linear style, packed and head-aligned
// partitions, GQA with shared KV heads, and 3-d expert tensors, over tp ∈ {1, 2, 3, 4, 8}.

#include <doctest/doctest.h>

#include <functional>
#include <string>
#include <vector>

#include "../oracle.hpp"
#include "io_harness.hpp"
#include "tpx/backend/host/backend.hpp"
#include "tpx/io/checkpoint.hpp"
#include "tpx/io/gather.hpp"
#include "tpx/layer/linear.hpp"
#include "tpx/shard/gqa.hpp"

using namespace tpx;
namespace fs = std::filesystem;

namespace {

constexpr std::array tps{1, 2, 3, 4, 8};

/// Deterministic bf16 values.
std::vector<bf16> random_bf16(index_t n, std::uint64_t seed) {
  const test::dense d = test::random_dense(n, 1, seed);
  std::vector<bf16> out;
  for (double v : d.v) out.push_back(bf16(v));
  return out;
}

}  // namespace

TEST_CASE("byte runs cover exactly the selected elements in order, each run maximal") {
  struct run_case {
    std::vector<index_t> shape;
    std::vector<shard::pieces> dims;
    std::size_t runs;  // expected number of runs
  };
  const shard::pieces all4{{{0, 4}}}, all6{{{0, 6}}}, all5{{{0, 5}}};
  const std::vector<run_case> cases{
      {{4, 6}, {{{{1, 3}}}, all6}, 1},                         // row split: one range
      {{4, 6}, {all4, {{{2, 4}}}}, 4},                         // column split: one per row
      {{8, 6}, {{{{0, 2}, {4, 6}}}, all6}, 2},                 // packed rows: one per piece
      {{8, 6}, {{{{0, 2}, {2, 3}}}, all6}, 1},                 // adjacent pieces merge
      {{4, 6}, {all4, all6}, 1},                               // whole tensor
      {{4, 6}, {all4, {{{0, 3}, {3, 6}}}}, 1},                 // pieces that add up to whole rows
      {{3, 8, 5}, {{{{0, 3}}}, {{{0, 2}, {4, 6}}}, all5}, 6},  // experts, packed dim 1
      {{3, 8, 5}, {{{{1, 2}}}, {{{0, 8}}}, all5}, 1},          // expert parallel: dim 0
      {{3, 8, 5}, {{{{0, 3}}}, {{{0, 8}}}, {{{1, 2}}}}, 24},   // innermost dim split
      {{4, 6}, {{{{1, 1}}}, all6}, 0},                         // empty
      {{}, {}, 1},                                             // a scalar
  };
  for (const run_case& c : cases) {
    CAPTURE(shard::shape_string(c.shape));
    const shard::selection sel{c.dims};
    const std::vector<index_t> want = test::selected_offsets(c.shape, sel);
    std::vector<index_t> got;
    std::vector<std::pair<std::uint64_t, std::uint64_t>> runs;
    io::detail::for_each_run(c.shape, 2, sel, [&](std::uint64_t at, std::uint64_t bytes) {
      runs.emplace_back(at, bytes);
      for (std::uint64_t b = at; b < at + bytes; b += 2) got.push_back(static_cast<index_t>(b / 2));
    });
    CHECK(got == want);
    CHECK(runs.size() == c.runs);
    for (std::size_t i = 1; i < runs.size(); ++i)
      CHECK(runs[i - 1].first + runs[i - 1].second != runs[i].first);  // maximal
  }
}

namespace {

/// One weight (and bias) of a linear layer, stored in bf16, and how the layer splits it.
struct weight_case {
  std::string name;
  index_t out = 0, in = 0;
  bool bias = true;
  std::function<layer::linear_options(int tp)> options;
};

/// For every tp: every rank reads its shard, builds the layer from it, checks it against the layer
/// built from the full weight, and the group saves the layer's parameters back.
template <class Style>
void round_trip(const weight_case& k, const test::temp_dir& dir) {
  using layer_t = layer::linear<Style, host::backend, float>;
  const std::vector<bf16> w = random_bf16(k.out * k.in, 7);
  const std::vector<bf16> b = k.bias ? random_bf16(k.out, 8) : std::vector<bf16>{};
  std::vector<io::tensor_bytes> tensors{
      io::as_tensor_bytes<bf16>(k.name + ".weight", {k.out, k.in}, w)};
  if (k.bias) tensors.push_back(io::as_tensor_bytes<bf16>(k.name + ".bias", {k.out}, b));
  const fs::path original = dir / (k.name + ".safetensors");
  io::save_safetensors(original, tensors, {{"format", "pt"}});
  const std::vector<float> w_full(w.begin(), w.end()), b_full(b.begin(), b.end());

  host::gemm_engine engine;
  for (const int tp : tps) {
    CAPTURE(tp);
    const layer::linear_options opts = k.options(tp);
    const io::checkpoint ck(original);
    std::vector<std::uint64_t> shard_bytes(static_cast<std::size_t>(tp));
    const fs::path saved = dir / (k.name + "." + std::to_string(tp) + ".safetensors");
    host::run(tp, [&](host::communicator& c) {
      const shard::placement wp = layer_t::weight_placement(opts, tp);
      const shard::placement bp = layer_t::bias_placement(opts, tp);
      const shard::selection ws = ck.select(k.name + ".weight", wp, c.rank());
      std::vector<float> w_local(static_cast<std::size_t>(ws.size()));
      std::uint64_t read = ck.read_into<float>(k.name + ".weight", ws, w_local);
      std::vector<float> b_local;
      if (k.bias) {
        const shard::selection bs = ck.select(k.name + ".bias", bp, c.rank());
        b_local.resize(static_cast<std::size_t>(bs.size()));
        read += ck.read_into<float>(k.name + ".bias", bs, b_local);
        CHECK(read == static_cast<std::uint64_t>(ws.size() + bs.size()) * 2);
      } else {
        CHECK(read == static_cast<std::uint64_t>(ws.size()) * 2);
      }
      shard_bytes[static_cast<std::size_t>(c.rank())] = read;

      const layer_t from_shard(
          shard::from_shard, engine, c,
          make_matrix<const float>(w_local.data(), ws.shape()[0], ws.shape()[1]), b_local, opts);
      const layer_t from_full(engine, c, make_matrix<const float>(w_full.data(), k.out, k.in),
                              b_full, opts);
      CHECK(from_shard.local_shape() == from_full.local_shape());
      const auto wv = from_shard.weight(), wf = from_full.weight();
      CHECK(std::equal(wv.data(), wv.data() + wv.size(), wf.data()));
      CHECK(std::ranges::equal(from_shard.bias(), from_full.bias()));

      // Save the layer's parameters: back to bf16 (exact), gathered, written by rank 0.
      const std::vector<bf16> w_back(wv.data(), wv.data() + wv.size());
      const std::vector<bf16> b_back(from_shard.bias().begin(), from_shard.bias().end());
      std::vector<io::shard_bytes> shards{io::as_shard_bytes<bf16>(
          k.name + ".weight", from_shard.weight_placement(), std::span<const bf16>(w_back))};
      if (k.bias)
        shards.push_back(io::as_shard_bytes<bf16>(k.name + ".bias", from_shard.bias_placement(),
                                                  std::span<const bf16>(b_back)));
      io::save(c, saved, shards, {{"format", "pt"}});
    });
    std::uint64_t total = 0;
    for (std::uint64_t n : shard_bytes) total += n;
    CHECK(ck.bytes_read() == total);  // nothing read beyond the shards
    CHECK(test::read_file(saved) == test::read_file(original));
  }
}

}  // namespace

TEST_CASE("every linear style reads its shard, rebuilds the layer and saves the same file") {
  test::temp_dir dir;
  const auto plain = [](const std::string& name) {
    return weight_case{name, 13, 10, true, [name](int) {
                         return layer::linear_options{
                             .name = name, .out_features = 13, .in_features = 10};
                       }};
  };
  round_trip<style::colwise<>>(plain("colwise"), dir);
  round_trip<style::colwise_gathered>(plain("colwise_gathered"), dir);
  round_trip<style::rowwise<>>(plain("rowwise"), dir);
  round_trip<style::rowwise_split>(plain("rowwise_split"), dir);
  round_trip<style::replicate<>>(plain("replicate"), dir);

  const auto chunked = [](const std::string& name) {
    return weight_case{name, 10, 7, false, [name](int) {
                         return layer::linear_options{.name = name,
                                                      .out_features = 10,
                                                      .in_features = 7,
                                                      .split = shard::split_kind::chunk};
                       }};
  };
  round_trip<style::colwise<>>(chunked("colwise_chunk"), dir);
  round_trip<style::rowwise<>>(chunked("rowwise_chunk"), dir);

  // gate|up of 2 × 7 rows, each block split on its own (uneven for every tp but 1 and 7).
  round_trip<style::colwise<>>(
      {"gate_up", 14, 6, true,
       [](int) {
         return layer::linear_options{
             .name = "gate_up", .out_features = 14, .in_features = 6, .blocks = {{7, 1}, {7, 1}}};
       }},
      dir);
  // Packed on the in dim: two blocks of 5 columns.
  round_trip<style::rowwise<>>({"packed_rowwise", 6, 10, true,
                                [](int) {
                                  return layer::linear_options{.name = "packed_rowwise",
                                                               .out_features = 6,
                                                               .in_features = 10,
                                                               .blocks = {{5, 1}, {5, 1}}};
                                }},
                               dir);
}

TEST_CASE("q, k, v and o of grouped-query attention round-trip, KV heads split or replicated") {
  test::temp_dir dir;
  // 8 query / 2 KV heads. tp 3: query heads 3 | 3 | 2, KV heads 0 | 0-1 | 1 (rank 1 straddles
  // the groups); tp 4: each KV head on 2 ranks; tp 8: on 4.
  const shard::gqa heads{8, 2, 2};
  const index_t hidden = 6, q = 16, kv = 4;
  const auto by = [&](const std::string& name, index_t out, index_t in,
                      std::function<shard::partition(int)> p) {
    return weight_case{
        name, out, in, name != "o_proj", [=](int tp) {
          return layer::linear_options{
              .name = name, .out_features = out, .in_features = in, .partition = p(tp)};
        }};
  };
  round_trip<style::colwise<>>(
      by("q_proj", q, hidden, [&](int tp) { return heads.q_partition(tp); }), dir);
  round_trip<style::colwise<>>(
      by("k_proj", kv, hidden, [&](int tp) { return heads.kv_partition(tp); }), dir);
  round_trip<style::colwise<>>(
      by("qkv_proj", q + 2 * kv, hidden, [&](int tp) { return heads.qkv_partition(tp); }), dir);
  round_trip<style::rowwise<>>(
      by("o_proj", hidden, q, [&](int tp) { return heads.q_partition(tp); }), dir);
}

TEST_CASE("expert tensors [E, 2I, H] round-trip packed on dim 1 and expert-parallel on dim 0") {
  test::temp_dir dir;
  const index_t experts = 5, inter = 3, hidden = 4;
  const std::vector<index_t> shape{experts, 2 * inter, hidden};
  const std::vector<bf16> w = random_bf16(experts * 2 * inter * hidden, 3);
  const fs::path original = dir / "experts.safetensors";
  io::save_safetensors(original,
                       std::vector{io::as_tensor_bytes<bf16>("experts.gate_up", shape, w)});
  const io::checkpoint ck(original);
  for (const int tp : tps) {
    CAPTURE(tp);
    const std::array<shard::block, 2> gate_up{{{inter, 1}, {inter, 1}}};
    const std::vector<shard::placement> placements{
        shard::placement::split(shape, 1,
                                shard::partition::packed(gate_up, tp, shard::split_kind::balanced)),
        shard::placement::split(shape, 0,
                                shard::partition::split(experts, tp, shard::split_kind::balanced)),
        shard::placement::split(shape, 2,
                                shard::partition::split(hidden, tp, shard::split_kind::chunk)),
        shard::placement::replicated(shape)};
    for (std::size_t i = 0; i < placements.size(); ++i) {
      CAPTURE(i);
      const fs::path saved = dir / fmt::format("experts.{}.{}.safetensors", tp, i);
      host::run(tp, [&](host::communicator& c) {
        const shard::placement& p = placements[i];
        const std::vector<std::byte> local = ck.read<std::byte>("experts.gate_up", p, c.rank());
        CHECK(local.size() ==
              static_cast<std::size_t>(shard::element_count(p.local_shape(c.rank()))) * 2);
        const io::shard_bytes s{{"experts.gate_up", io::file_dtype::bf16, shape}, p, local};
        const std::vector<std::byte> full = io::gather(c, s);
        CHECK(std::memcmp(full.data(), w.data(), full.size()) == 0);
        io::save(c, saved, std::span<const io::shard_bytes>(&s, 1));
      });
      CHECK(test::read_file(saved) == test::read_file(original));
    }
  }
}

TEST_CASE("a save the ranks disagree on, or that cannot be written, fails on every rank") {
  test::temp_dir dir;
  const std::vector<float> w(12, 1.0f);
  const auto p = [](int tp) {
    return shard::placement::split({12}, 0,
                                   shard::partition::split(12, tp, shard::split_kind::balanced));
  };
  const auto errors_of = [&](int tp, const fs::path& path,
                             const std::function<io::shard_bytes(int rank)>& shard_of) {
    std::vector<std::string> errors(static_cast<std::size_t>(tp), "no error");
    host::run(tp, [&](host::communicator& c) {
      try {
        const io::shard_bytes s = shard_of(c.rank());
        io::save(c, path, std::span<const io::shard_bytes>(&s, 1));
      } catch (const error& e) {
        errors[static_cast<std::size_t>(c.rank())] = e.what();
      }
    });
    return errors;
  };
  const auto shard_for = [&](int tp, int rank, const std::string& name) {
    const shard::placement pl = p(tp);
    return io::as_shard_bytes<float>(
        name, pl,
        std::span<const float>(w).first(static_cast<std::size_t>(pl.partition.of(rank).size())));
  };

  // Rank 1 names its tensor differently.
  auto errors = errors_of(3, dir / "a.safetensors",
                          [&](int r) { return shard_for(3, r, r == 1 ? "other" : "w"); });
  for (const std::string& e : errors)
    CHECK(e.find("the ranks pass different tensors") != std::string::npos);
  CHECK_FALSE(fs::exists(dir / "a.safetensors"));

  // Rank 2 passes a shard of the wrong size: its own sentence there, a pointer to it elsewhere.
  errors = errors_of(3, dir / "b.safetensors", [&](int r) {
    io::shard_bytes s = shard_for(3, r, "w");
    if (r == 2) s.local = s.local.first(4);
    return s;
  });
  CHECK(errors[2].find("rank 2 holds 4 bytes but its block [4] of F32 needs 16 bytes") !=
        std::string::npos);
  CHECK(errors[0].find("another rank's shards are not well formed") != std::string::npos);
  CHECK_FALSE(fs::exists(dir / "b.safetensors"));

  // Rank 1 places its tensor differently (the same names, dtypes and shapes): not gathered.
  errors = errors_of(2, dir / "p.safetensors", [&](int r) {
    const shard::placement pl =
        r == 1 ? shard::placement::split({12}, 0, shard::partition(12, {{{{0, 4}}}, {{{4, 12}}}}))
               : p(2);
    return io::as_shard_bytes<float>(
        "w", pl,
        std::span<const float>(w).first(static_cast<std::size_t>(pl.partition.of(r).size())));
  });
  for (const std::string& e : errors)
    CHECK(e.find("shapes or placements disagree") != std::string::npos);
  CHECK_FALSE(fs::exists(dir / "p.safetensors"));

  // The target cannot be written (its directory is a file): rank 0 says why; the other ranks
  // throw a peer_error naming rank 0, and host::run rethrows rank 0's error.
  test::write_file(dir / "file", "x");
  errors =
      errors_of(4, dir / "file" / "c.safetensors", [&](int r) { return shard_for(4, r, "w"); });
  CHECK(errors[0].find("cannot create the directory") != std::string::npos);
  for (int r = 1; r < 4; ++r)
    CHECK(errors[static_cast<std::size_t>(r)].find("rank 0 could not write the checkpoint") !=
          std::string::npos);
  CHECK_THROWS_WITH_AS(host::run(4,
                                 [&](host::communicator& c) {
                                   const io::shard_bytes s = shard_for(4, c.rank(), "w");
                                   io::save(c, dir / "file" / "c.safetensors",
                                            std::span<const io::shard_bytes>(&s, 1));
                                 }),
                       doctest::Contains("cannot create the directory"), error);
}

TEST_CASE("save creates the target's missing directories") {
  test::temp_dir dir;
  const std::vector<float> w(6, 2.0f);
  const fs::path path = dir / "out" / "step-1" / "model.safetensors";
  host::run(2, [&](host::communicator& c) {
    const shard::placement pl =
        shard::placement::split({6}, 0, shard::partition::split(6, 2, shard::split_kind::balanced));
    const io::shard_bytes s =
        io::as_shard_bytes<float>("w", pl, std::span<const float>(w).first(3));
    io::save(c, path, std::span<const io::shard_bytes>(&s, 1));
  });
  const io::safetensors_file f(path);
  CHECK(f.at("w").shape == std::vector<index_t>{6});
}
