#pragma once
/// \file
/// `detail::run_group`: one function per rank of a host group (`host/group.hpp`), each on its own
/// thread; a failure releases the others and the cause is rethrown to the caller. Its parts —
/// running one rank (`run_rank`) and rethrowing the cause (`rethrow_cause`) — serve `host::team`
/// as well.

#include <algorithm>
#include <exception>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include "tpx/backend/host/group.hpp"
#include "tpx/core/error.hpp"

namespace tpx::inline v0::host {

namespace detail {

/// How one rank's function ended, when it ended by an exception.
struct rank_failure {
  std::exception_ptr error;
  std::string message;
  bool peer = false;  ///< a `peer_error`: another rank's failure reported, not this rank's own
};

/// Runs `body()` as rank `rank` of `g`: on return the rank leaves the group (a rank still waiting
/// for it is told); released by another rank's failure it is gone; on its own exception it
/// records it in `f`, releases the others and is gone.
template <class Body>
void run_rank(group& g, int rank, rank_failure& f, Body&& body) {
  try {
    body();
    g.leave(rank);
    return;
  } catch (const released&) {
    g.gone(rank);
    return;  // another rank failed; it reports why
  } catch (const peer_error& e) {
    f = {std::current_exception(), e.what(), true};
  } catch (const std::exception& e) {
    f = {std::current_exception(), e.what()};
  } catch (...) {
    f = {std::current_exception(), "an exception not derived from std::exception"};
  }
  g.abort();
  g.gone(rank);
}

/// The cause of a group's failure: the failure of the lowest rank that failed because of its own
/// work (a `peer_error` only when no rank raised anything else); null when no rank failed.
inline const rank_failure* cause_of(const std::vector<rank_failure>& failures) {
  const rank_failure* peer = nullptr;
  for (const rank_failure& f : failures) {
    if (f.error && !f.peer) return &f;
    if (f.error && !peer) peer = &f;
  }
  return peer;
}

/// Rethrows the cause of a group's failure (`cause_of`), if a rank failed. A `tpx::error`
/// rethrown carries the other ranks' messages as its `notes()`, one per distinct message with the
/// ranks that raised it ("ranks 1, 2, 3: the same" when they repeat the cause).
inline void rethrow_cause(const std::vector<rank_failure>& failures) {
  const rank_failure* cause = cause_of(failures);
  if (!cause) return;
  try {
    std::rethrow_exception(cause->error);
  } catch (error& e) {
    // One note per distinct message, naming every rank that raised it (in rank order of its
    // first rank); the cause's own message again is "the same", not a copy per rank.
    std::vector<std::pair<std::string, std::vector<int>>> by_message;
    for (std::size_t r = 0; r < failures.size(); ++r) {
      const rank_failure& f = failures[r];
      if (!f.error || &f == cause) continue;
      auto it = std::find_if(by_message.begin(), by_message.end(),
                             [&](const auto& m) { return m.first == f.message; });
      if (it == by_message.end()) it = by_message.insert(by_message.end(), {f.message, {}});
      it->second.push_back(static_cast<int>(r));
    }
    for (const auto& [message, ranks] : by_message) {
      std::string note = ranks.size() > 1 ? "ranks " : "rank ";
      for (std::size_t i = 0; i < ranks.size(); ++i) {
        if (i > 0) note += ", ";
        note += std::to_string(ranks[i]);
      }
      note += ": ";
      note += message == cause->message ? "the same" : message;
      e.add_note(std::move(note));
    }
    throw;
  }
}

/// Runs `fn(comm)` on `tp` threads, one per rank, each with the communicator `make(group, rank)`
/// builds, and returns when all have returned. If any rank throws, the others are released and
/// the cause is rethrown here (`rethrow_cause`).
template <class Make, class Fn>
void run_group(int tp, std::string_view who, Make make, Fn& fn) {
  expect_group_size(tp, who);
  group g(tp);
  std::vector<rank_failure> failures(static_cast<std::size_t>(tp));
  const auto body = [&](int rank) {
    run_rank(g, rank, failures[static_cast<std::size_t>(rank)], [&] {
      auto comm = make(g, rank);
      fn(comm);
    });
  };
  std::optional<std::string> no_thread;
  {
    std::vector<std::jthread> threads;
    threads.reserve(static_cast<std::size_t>(tp - 1));
    for (int r = 1; r < tp && !no_thread; ++r) {
      try {
        threads.emplace_back(body, r);
      } catch (const std::system_error& e) {
        // The ranks already started wait for this one: release them, join them, say why.
        no_thread =
            fmt::format("{}: cannot start the thread of rank {} of {}: {}", who, r, tp, e.what());
        g.abort();
      }
    }
    if (!no_thread) body(0);
  }
  if (no_thread) throw error(*no_thread);
  rethrow_cause(failures);
}

}  // namespace detail

}  // namespace tpx::inline v0::host
