#pragma once
// A host communicator with a stopwatch: the wall time spent inside its collective calls, for the
// benchmarks that report the fraction of a step spent in collectives (--blocks, --decode). On
// thread ranks that time includes waiting for the slowest rank, since a collective cannot finish
// before every rank has arrived.

#include <span>

#include "common.hpp"
#include "tpx/backend/host/backend.hpp"
#include "tpx/comm/communicator.hpp"
#include "tpx/layer/backend.hpp"

namespace tpx::bench {

/// A host communicator that also adds up the wall time spent inside its calls.
class timed_communicator {
 public:
  explicit timed_communicator(host::communicator& c) : c_(&c) {}
  int rank() const { return c_->rank(); }
  int size() const { return c_->size(); }
  const comm::stats& statistics() const { return c_->statistics(); }
  void reset() {
    c_->reset_statistics();
    seconds_ = 0;
  }
  double seconds() const { return seconds_; }

  template <class T>
  void all_reduce(std::span<T> d, comm::reduce_op op = comm::reduce_op::sum) {
    timed([&] { c_->all_reduce(d, op); });
  }
  template <class T>
  void all_gather(std::span<const T> in, std::span<T> out, std::span<const index_t> n) {
    timed([&] { c_->all_gather(in, out, n); });
  }
  template <class T>
  void reduce_scatter(std::span<const T> in, std::span<T> out, std::span<const index_t> n,
                      comm::reduce_op op = comm::reduce_op::sum) {
    timed([&] { c_->reduce_scatter(in, out, n, op); });
  }
  template <class T>
  void broadcast(std::span<T> d, int root) {
    timed([&] { c_->broadcast(d, root); });
  }
  template <class T>
  void all_to_all_v(std::span<const T> s, std::span<const index_t> sc, std::span<T> r,
                    std::span<const index_t> rc) {
    timed([&] { c_->all_to_all_v(s, sc, r, rc); });
  }
  template <class T>
  void send(std::span<const T> d, int peer) {
    timed([&] { c_->send(d, peer); });
  }
  template <class T>
  void recv(std::span<T> d, int peer) {
    timed([&] { c_->recv(d, peer); });
  }
  void barrier() { c_->barrier(); }

 private:
  template <class F>
  void timed(F&& f) {
    const auto start = clock_type::now();
    f();
    seconds_ += since(start);
  }
  host::communicator* c_;
  double seconds_ = 0;
};
static_assert(comm::communicator<timed_communicator>);

struct timed_backend : host::backend {
  using communicator = timed_communicator;
};
static_assert(layer::backend<timed_backend>);

}  // namespace tpx::bench
