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
/// error naming the token. The row statistics and dlogits are the backend's `ops`; the loss is
/// summed on the host from the 3T statistics (on the cuda backend `forward` waits for the stream).

#include <cmath>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "tpx/comm/communicator.hpp"
#include "tpx/core/dtype.hpp"
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

template <backend_with_ops Backend, class T = float>
class vocab_cross_entropy {
 public:
  using backend_type = Backend;
  using value_type = T;
  using comm_type = typename Backend::communicator;

  vocab_cross_entropy(comm_type& comm, cross_entropy_options options)
      : comm_(&comm), ops_(comm), opt_(std::move(options)) {
    expect(0 <= opt_.vocab_range.begin && opt_.vocab_range.begin <= opt_.vocab_range.end &&
               opt_.vocab_range.end <= opt_.vocab,
           "{}: rank {} holds vocab columns [{}, {}), outside the vocabulary [0, {})", opt_.name,
           comm.rank(), opt_.vocab_range.begin, opt_.vocab_range.end, opt_.vocab);
  }

  /// The mean loss over tokens whose target is not ignore_index (0 when there are none).
  T forward(matrix_view<const T> logits, std::span<const std::int64_t> targets) {
    const index_t tokens = logits.rows();
    expect_shapes(logits, targets, "logits");
    const index_t first = opt_.vocab_range.begin;
    const std::span<T> stats = detail::scratch(stats_, 3 * tokens);
    const std::span<T> max = stats.first(idx(tokens)), sums = stats.subspan(idx(tokens));
    ops_.row_max(logits, max);
    comm_->all_reduce(max, comm::reduce_op::max);
    ops_.cross_entropy_sums(logits, std::span<const T>(max), targets, first, sums);
    comm_->all_reduce(sums);
    host_stats_.resize(stats.size());
    const auto n = static_cast<index_t>(stats.size());
    ops_.copy_to_host(make_matrix<const T>(stats.data(), 1, n),
                      make_matrix(host_stats_.data(), 1, n));
    valid_ = 0;
    double total = 0;  // summed in double on the host, whatever T is
    for (index_t t = 0; t < tokens; ++t) {
      if (targets[idx(t)] == opt_.ignore_index) continue;
      ++valid_;
      total += std::log(as_double(host_stats_[idx(tokens + t)])) + as_double(host_stats_[idx(t)]) -
               as_double(host_stats_[idx(2 * tokens + t)]);
    }
    tokens_ = tokens;
    return static_cast<T>(valid_ == 0 ? 0.0 : total / static_cast<double>(valid_));
  }

  /// dlogits of the mean loss times `dloss`, from the logits and targets of the last forward.
  void backward(matrix_view<const T> logits, std::span<const std::int64_t> targets,
                matrix_view<T> dlogits, T dloss = T(1)) {
    const index_t tokens = logits.rows();
    expect_shapes(logits, targets, "logits");
    expect(dlogits.rows() == tokens && dlogits.cols() == logits.cols(),
           "{} (rank {}): dlogits are [{} × {}] but the logits are [{} × {}]", opt_.name,
           comm_->rank(), dlogits.rows(), dlogits.cols(), tokens, logits.cols());
    expect(tokens_ == tokens, "{}: backward for {} tokens needs a forward on as many", opt_.name,
           tokens);
    const T scale =
        static_cast<T>(valid_ == 0 ? 0.0 : as_double(dloss) / static_cast<double>(valid_));
    const std::span<const T> max(stats_.data(), idx(tokens)),
        sum(stats_.data() + tokens, idx(tokens));
    ops_.cross_entropy_backward(logits, max, sum, targets, opt_.vocab_range.begin,
                                opt_.ignore_index, scale, dlogits);
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
  typename Backend::ops ops_;
  cross_entropy_options opt_;
  typename Backend::template buffer<T> stats_;  // [max | sum-exp | target logit], each [tokens]
  std::vector<T> host_stats_;                   // the same, read back for the loss
  index_t tokens_ = -1;                         // of the last forward
  index_t valid_ = 0;
};

}  // namespace tpx::inline v0::layer
