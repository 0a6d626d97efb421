#pragma once
/// \file
/// `host::team`: host ranks that stay alive between calls, for an engine that owns them. Where
/// `host::run(tp, fn)` starts tp threads, runs `fn` once and ends them, a team starts its rank
/// threads once; each `run(fn)` hands `fn` to every rank, which calls it with the rank's own
/// communicator — the same one on every call, so a model built in one call (holding that
/// communicator) serves the next ones. An engine keeps each rank's state where its functions
/// find it (a vector indexed by `comm.rank()`):
///
///   host::team team(2);
///   std::vector<std::optional<Model>> models(2);
///   team.run([&](host::communicator& c) { models[c.rank()].emplace(engine, c, …); });
///   while (serving) team.run([&](host::communicator& c) { models[c.rank()]->forward(…); });
///
/// A call returns when every rank has returned from `fn`. Its errors are `host::run`'s: a rank
/// that throws releases the others and the cause is rethrown to the caller with the other ranks'
/// messages as notes; a rank that returns while another waits for it in a collective is an error
/// naming both. A failed call spends the team (its ranks were released mid-call, so their
/// communicators' state is lost): later calls throw, saying so; make a new team. A message sent
/// in one call may be received in a later one, as with MPI.
///
/// While a call runs, OpenBLAS uses `team_options::blas_threads` threads (default: one per rank
/// when there are several, unless the environment names a count — `host/blas_threads.hpp`); on
/// Linux, `team_options::pin` pins rank r's thread to CPU r mod the CPUs this process may use.

#include <concepts>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#if defined(__linux__)
#include <pthread.h>
#include <sched.h>
#endif

#include "tpx/backend/host/blas_threads.hpp"
#include "tpx/backend/host/communicator.hpp"
#include "tpx/core/error.hpp"

namespace tpx::inline v0::host {

struct team_options {
  /// OpenBLAS threads while a call runs; nullopt: `blas_threads_for(tp)`. 0 leaves OpenBLAS as
  /// it is.
  std::optional<int> blas_threads = std::nullopt;
  /// Pin rank r's thread to CPU r mod the CPUs this process may use (Linux; elsewhere ignored).
  bool pin = false;
};

class team {
 public:
  /// Starts `tp` rank threads, each with its communicator over one group, waiting for calls.
  explicit team(int tp, team_options options = {}) : options_(options) {
    expect_group_size(tp, "host::team");
    expect(!options.blas_threads || *options.blas_threads >= 0,
           "host::team: blas_threads must be 0 (leave OpenBLAS as it is) or more, got {}",
           options.blas_threads.value_or(0));
    blas_threads_ = !options.blas_threads        ? blas_threads_for(tp)
                    : *options.blas_threads == 0 ? std::nullopt
                                                 : options.blas_threads;
    group_ = std::make_shared<detail::group>(tp);
    for (int r = 0; r < tp; ++r) comms_.emplace_back(*group_, r);
    failures_.resize(static_cast<std::size_t>(tp));
    threads_.reserve(static_cast<std::size_t>(tp));
    for (int r = 0; r < tp; ++r) {
      try {
        threads_.emplace_back([this, r] { serve(r); });
      } catch (const std::system_error& e) {
        stop();
        throw error(fmt::format("host::team: cannot start the thread of rank {} of {}: {}", r, tp,
                                e.what()));
      }
    }
  }
  team(const team&) = delete;
  team& operator=(const team&) = delete;
  /// Ends the rank threads (no call may be in progress).
  ~team() { stop(); }

  int size() const noexcept { return group_->size(); }
  /// Whether a call failed, so that the team runs no more.
  bool spent() const {
    std::lock_guard lock(mutex_);
    return spent_.has_value();
  }

  /// Calls `fn(comm)` on every rank's thread with its communicator and returns when all have
  /// returned; a rank's error is rethrown here as `host::run` rethrows it. One call at a time:
  /// another thread's call waits for this one; a call from inside a rank's function is an error.
  template <class Fn>
  requires std::invocable<Fn&, communicator&>
  void run(Fn&& fn) {
    for (const std::jthread& t : threads_)
      expect(t.get_id() != std::this_thread::get_id(),
             "host::team::run: called from inside a rank's function (it would wait for itself); "
             "a rank's function must return before the next call");
    std::lock_guard call(call_mutex_);
    const blas_threads_scope blas(blas_threads_);
    std::unique_lock lock(mutex_);
    expect(!spent_,
           "host::team::run: the team is spent: an earlier call failed ({}); make a new "
           "team",
           spent_.value_or(""));
    job_ = [&fn](communicator& c) { fn(c); };
    running_ = size();
    ++call_;
    start_.notify_all();
    done_.wait(lock, [&] { return running_ == 0; });
    job_ = nullptr;
    const detail::rank_failure* cause = detail::cause_of(failures_);
    if (cause == nullptr) {
      group_->rejoin();
      return;
    }
    spent_ = cause->peer ? "see its error" : cause->message;
    std::vector<detail::rank_failure> failures(static_cast<std::size_t>(size()));
    failures.swap(failures_);
    lock.unlock();
    detail::rethrow_cause(failures);
  }

 private:
  void serve(int rank) {
    pin(rank);
    std::uint64_t seen = 0;
    while (true) {
      std::function<void(communicator&)> job;
      {
        std::unique_lock lock(mutex_);
        start_.wait(lock, [&] { return stopping_ || call_ != seen; });
        if (stopping_) return;
        seen = call_;
        job = job_;
      }
      detail::run_rank(*group_, rank, failures_[static_cast<std::size_t>(rank)],
                       [&] { job(comms_[static_cast<std::size_t>(rank)]); });
      std::lock_guard lock(mutex_);
      if (--running_ == 0) done_.notify_all();
    }
  }

  void pin(int rank) const {
#if defined(__linux__)
    if (!options_.pin) return;
    cpu_set_t allowed;
    CPU_ZERO(&allowed);
    if (sched_getaffinity(0, sizeof allowed, &allowed) != 0 || CPU_COUNT(&allowed) == 0) return;
    int k = rank % CPU_COUNT(&allowed);
    for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu)
      if (CPU_ISSET(cpu, &allowed) && k-- == 0) {
        cpu_set_t one;
        CPU_ZERO(&one);
        CPU_SET(cpu, &one);
        (void)pthread_setaffinity_np(pthread_self(), sizeof one, &one);
        return;
      }
#else
    (void)rank;
#endif
  }

  void stop() {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    start_.notify_all();
    threads_.clear();  // joins
  }

  team_options options_;
  std::optional<int> blas_threads_;  ///< OpenBLAS's count while a call runs; nullopt: leave it
  std::shared_ptr<detail::group> group_;
  std::deque<communicator> comms_;  // never moved: each rank's lives as long as the team
  std::vector<std::jthread> threads_;
  mutable std::mutex mutex_;
  std::mutex call_mutex_;
  std::condition_variable start_, done_;
  std::function<void(communicator&)> job_;
  std::uint64_t call_ = 0;
  int running_ = 0;
  bool stopping_ = false;
  std::optional<std::string> spent_;
  std::vector<detail::rank_failure> failures_;
};

}  // namespace tpx::inline v0::host
