#pragma once
/// \file
/// `vocab_cross_entropy<Backend, T>`: mean cross-entropy of vocab-sharded logits, without ever
/// gathering the logits.
///
///   logits [T, V_r] on rank r (columns = its vocab rows [v_r, v_r + V_r)), targets [T] replicated
///   m_t  = max over ranks of the local row max               all-reduce(max) of [T]
///   s_t  = Σ over ranks of Σ_j exp(l_tj − m_t)                } one all-reduce(sum) of [2T]
///   z_t  = the target's logit, from the rank that holds it  }
///   loss = mean over valid t of (log s_t + m_t − z_t)        (targets == ignore_index skipped)
///   dlogits_tj = (exp(l_tj − m_t) / s_t − [j = target]) · dloss / n_valid; 0 on ignored rows
///
/// The loss is the same on every rank. Targets outside [0, vocab) other than ignore_index are an
/// error naming the token.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <span>
#include <string>
#include <vector>

#include "tpx/comm/communicator.hpp"
#include "tpx/core/error.hpp"
#include "tpx/core/tensor_view.hpp"
#include "tpx/layer/backend.hpp"
#include "tpx/shard/split.hpp"

namespace tpx::inline v0::layer {

struct cross_entropy_options {
  std::string name = "cross_entropy";
  index_t vocab = 0;                 ///< the whole vocabulary
  shard::interval vocab_range = {};  ///< this rank's columns, e.g. `embedding.vocab_range()`
  std::int64_t ignore_index = -100;
};

template <backend Backend, class T = float>
class vocab_cross_entropy {
  static_assert(
      host_memory<Backend>,
      "tpx::vocab_cross_entropy: runs its element-wise work in host loops, so it needs a backend "
      "whose buffers the host reads (host_memory); on the cuda backend only "
      "tpx::linear runs so far");

 public:
  using backend_type = Backend;
  using value_type = T;
  using comm_type = typename Backend::communicator;

  vocab_cross_entropy(comm_type& comm, cross_entropy_options options)
      : comm_(&comm), opt_(std::move(options)) {
    expect(0 <= opt_.vocab_range.begin && opt_.vocab_range.begin <= opt_.vocab_range.end &&
               opt_.vocab_range.end <= opt_.vocab,
           "{}: rank {} holds vocab columns [{}, {}), outside the vocabulary [0, {})", opt_.name,
           comm.rank(), opt_.vocab_range.begin, opt_.vocab_range.end, opt_.vocab);
  }

  /// The mean loss over tokens whose target is not ignore_index (0 when there are none).
  T forward(matrix_view<const T> logits, std::span<const std::int64_t> targets) {
    const index_t tokens = logits.rows();
    expect_shapes(logits, targets, "logits");
    const shard::interval own = opt_.vocab_range;
    stats_.resize(static_cast<std::size_t>(3 * tokens));
    const std::span<T> max(stats_.data(), static_cast<std::size_t>(tokens));
    const std::span<T> sums(stats_.data() + tokens, static_cast<std::size_t>(2 * tokens));
    for (index_t t = 0; t < tokens; ++t) {
      T m = -std::numeric_limits<T>::infinity();
      for (index_t j = 0; j < logits.cols(); ++j) m = std::max(m, logits(t, j));
      max[idx(t)] = m;
    }
    comm_->all_reduce(max, comm::reduce_op::max);
    for (index_t t = 0; t < tokens; ++t) {
      T s = 0;
      for (index_t j = 0; j < logits.cols(); ++j) s += std::exp(logits(t, j) - max[idx(t)]);
      const std::int64_t target = targets[idx(t)];
      sums[idx(t)] = s;
      sums[idx(tokens + t)] =
          own.begin <= target && target < own.end ? logits(t, target - own.begin) : T(0);
    }
    comm_->all_reduce(sums);
    valid_ = 0;
    T total = 0;
    for (index_t t = 0; t < tokens; ++t) {
      if (targets[idx(t)] == opt_.ignore_index) continue;
      ++valid_;
      total += std::log(sums[idx(t)]) + max[idx(t)] - sums[idx(tokens + t)];
    }
    return valid_ == 0 ? T(0) : total / static_cast<T>(valid_);
  }

  /// dlogits of the mean loss times `dloss`, from the logits and targets of the last forward.
  void backward(matrix_view<const T> logits, std::span<const std::int64_t> targets,
                matrix_view<T> dlogits, T dloss = T(1)) {
    const index_t tokens = logits.rows();
    expect_shapes(logits, targets, "logits");
    expect(dlogits.rows() == tokens && dlogits.cols() == logits.cols(),
           "{} (rank {}): dlogits are [{} × {}] but the logits are [{} × {}]", opt_.name,
           comm_->rank(), dlogits.rows(), dlogits.cols(), tokens, logits.cols());
    expect(static_cast<index_t>(stats_.size()) == 3 * tokens,
           "{}: backward for {} tokens needs a forward on as many", opt_.name, tokens);
    const T scale = valid_ == 0 ? T(0) : dloss / static_cast<T>(valid_);
    const shard::interval own = opt_.vocab_range;
    for (index_t t = 0; t < tokens; ++t) {
      const std::int64_t target = targets[idx(t)];
      const bool ignored = target == opt_.ignore_index;
      const T m = stats_[idx(t)], s = stats_[idx(tokens + t)];
      for (index_t j = 0; j < logits.cols(); ++j) {
        const T p = std::exp(logits(t, j) - m) / s;
        dlogits(t, j) = ignored ? T(0) : (p - (own.begin + j == target ? T(1) : T(0))) * scale;
      }
    }
  }

  /// Tokens the last forward averaged over.
  index_t valid_tokens() const noexcept { return valid_; }

 private:
  static std::size_t idx(index_t i) { return static_cast<std::size_t>(i); }

  void expect_shapes(matrix_view<const T> logits, std::span<const std::int64_t> targets,
                     std::string_view what) const {
    expect(logits.cols() == opt_.vocab_range.size() &&
               static_cast<index_t>(targets.size()) == logits.rows(),
           "{} (rank {}): the {} are [{} × {}] for {} targets, but must be [{} × {}] (tokens × "
           "the rank's vocab columns [{}, {}))",
           opt_.name, comm_->rank(), what, logits.rows(), logits.cols(), targets.size(),
           targets.size(), opt_.vocab_range.size(), opt_.vocab_range.begin, opt_.vocab_range.end);
    for (std::size_t t = 0; t < targets.size(); ++t)
      expect(targets[t] == opt_.ignore_index || (0 <= targets[t] && targets[t] < opt_.vocab),
             "{}: token {} has target {}, outside the vocabulary [0, {}) and not the ignore_index "
             "{}",
             opt_.name, t, targets[t], opt_.vocab, opt_.ignore_index);
  }

  comm_type* comm_;
  cross_entropy_options opt_;
  std::vector<T> stats_;  // [max | sum-exp | target logit], each [tokens]
  index_t valid_ = 0;
};

}  // namespace tpx::inline v0::layer
