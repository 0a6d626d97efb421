#pragma once
// Runs a whole causal LM from a model directory on tp thread ranks and brings back what the tests
// compare: every rank's gathered logits, the loss, every parameter gradient reassembled from the
// ranks' shards by their placements, and the bytes each rank read.

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "../io/io_harness.hpp"
#include "tpx/backend/host/backend.hpp"
#include "tpx/model/causal_lm.hpp"

namespace tpx::test {

/// A model directory under tests/model/fixtures: `hf-tiny/llama` (the shared fixtures' copy),
/// `hf-ref/qwen2` (make_reference.py), …
inline std::filesystem::path model_fixture(std::string_view name) {
  const char* root = std::getenv("TPX_MODEL_FIXTURES");
  expect(root != nullptr, "TPX_MODEL_FIXTURES is not set (meson test sets it)");
  return std::filesystem::path(root) / name;
}

struct model_run {
  std::vector<double> logits;  ///< [T, V], from rank 0 (every rank's gathered copy is checked)
  bool ranks_agree = true;     ///< every rank gathered the same logits and loss
  double loss = 0;
  std::map<std::string, std::vector<double>> grads;  ///< full gradient of every parameter
  std::map<std::string, std::vector<index_t>> shapes;
  std::vector<std::uint64_t> bytes_read, bytes_expected;  ///< per rank
  std::vector<std::uint64_t> bytes_held;                  ///< per rank
};

struct run_options {
  int tp = 1;
  bool sp = false;
  int ep = 1;
  bool backward = true;
  /// > 0: inference through a cache — a prefill of this many ids, then one cached decode step
  /// per remaining id; `logits` are the steps' logits in order. 0: one whole forward.
  index_t prefill = 0;
};

/// Scatters a rank's block `local` (the selection `sel` of a tensor of `shape`) into `full`.
template <class T>
void put_block(std::vector<double>& full, const std::vector<index_t>& shape,
               const shard::selection& sel, std::span<const T> local) {
  const std::vector<index_t> at = selected_offsets(shape, sel);
  for (std::size_t i = 0; i < at.size(); ++i)
    full[static_cast<std::size_t>(at[i])] = static_cast<double>(local[i]);
}

/// Backend: host::backend, or a `layer::weights_in` of it.
template <class T = double, class Backend = host::backend>
model_run run_model(const std::filesystem::path& dir, std::span<const std::int64_t> ids,
                    std::span<const std::int64_t> targets, run_options o) {
  const model::config c = model::read_config(dir);
  const io::checkpoint ck(dir);
  model_run out;
  out.bytes_read.assign(static_cast<std::size_t>(o.tp), 0);
  out.bytes_expected.assign(static_cast<std::size_t>(o.tp), 0);
  out.bytes_held.assign(static_cast<std::size_t>(o.tp), 0);
  std::vector<std::vector<double>> logits(static_cast<std::size_t>(o.tp));
  std::vector<double> losses(static_cast<std::size_t>(o.tp));
  std::mutex m;
  const auto body = [&]<layer::block_mode Mode>(host::communicator& comm) {
    host::gemm_engine engine;
    model::causal_lm<Mode, Backend, T> lm(engine, comm, c, ck, {.ep = o.ep});
    const std::size_t r = static_cast<std::size_t>(comm.rank());
    out.bytes_read[r] = lm.bytes_read();
    out.bytes_held[r] = lm.bytes_held();
    for (const auto& [name, p] : lm.checkpoint_placements(ck))
      out.bytes_expected[r] +=
          static_cast<std::uint64_t>(p.of(comm.rank()).size()) * io::size_of(ck.info(name).dtype);
    if (o.prefill > 0) {
      typename decltype(lm)::cache kv = lm.make_cache(1, static_cast<index_t>(ids.size()));
      for (std::size_t at = 0; at < ids.size();) {
        const std::size_t n = at == 0 ? static_cast<std::size_t>(o.prefill) : 1;
        lm.forward_cached(ids.subspan(at, n), kv, 0);
        const std::vector<T> step = lm.gather_logits();
        logits[r].insert(logits[r].end(), step.begin(), step.end());
        at += n;
      }
      return;
    }
    lm.forward(ids);
    const std::vector<T> full = lm.gather_logits();
    logits[r].assign(full.begin(), full.end());
    if (targets.empty()) return;
    losses[r] = static_cast<double>(lm.loss(targets));
    if (!o.backward) return;
    lm.backward();
    lm.for_each_parameter([&](const std::string& name, const shard::placement& p,
                              auto, std::span<const T> grad) {
      const std::lock_guard lock(m);
      std::vector<double>& g = out.grads[name];
      g.resize(static_cast<std::size_t>(shard::element_count(p.shape)));
      out.shapes[name] = p.shape;
      put_block(g, p.shape, p.of(comm.rank()), grad);
    });
  };
  host::run(o.tp, [&](host::communicator& comm) {
    if (o.sp)
      body.template operator()<layer::block_mode::sequence>(comm);
    else
      body.template operator()<layer::block_mode::tensor>(comm);
  });
  out.logits = logits[0];
  out.loss = losses[0];
  for (int r = 1; r < o.tp; ++r)
    out.ranks_agree = out.ranks_agree && logits[static_cast<std::size_t>(r)] == logits[0] &&
                      losses[static_cast<std::size_t>(r)] == losses[0];
  return out;
}

/// max |a − b| / max(max |b|, 1).
inline double relative(const std::vector<double>& a, const std::vector<double>& b) {
  if (a.size() != b.size()) return INFINITY;
  double worst = 0, scale = 1;
  for (std::size_t i = 0; i < a.size(); ++i) {
    worst = std::max(worst, std::isnan(a[i]) ? INFINITY : std::abs(a[i] - b[i]));
    scale = std::max(scale, std::abs(b[i]));
  }
  return worst / scale;
}

}  // namespace tpx::test
