#pragma once
// What the command-line programs (tpx-plan, tpx-run, tpx-tiny-model, tpx-demo,
// tpx-checkpoint-demo, tpx-bench) share: number flags, byte counts for people, and a main that
// line-buffers stdout and turns every error into one line on stderr and exit 2.

#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <string>
#include <string_view>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "tpx/core/error.hpp"
#include "tpx/version.hpp"
#if TPX_HAVE_MPI
#include <optional>

#include "tpx/backend/mpi/communicator.hpp"
#endif

namespace tpx::cli {

/// `text` as a whole number from `lo` to `hi`; an error naming `flag` otherwise.
inline std::int64_t whole_number(std::string_view flag, std::string_view text,
                                 std::int64_t lo = INT32_MIN, std::int64_t hi = INT32_MAX) {
  std::int64_t v = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  expect(!text.empty() && ec == std::errc() && end == text.data() + text.size(),
         "{} takes a whole number, got '{}'", flag, text);
  expect(v >= lo && v <= hi, "{} takes a whole number from {} to {}, got {}", flag, lo, hi, v);
  return v;
}

/// `text` as a finite real number; an error naming `flag` otherwise.
inline double real_number(std::string_view flag, std::string_view text) {
  double v = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  expect(!text.empty() && ec == std::errc() && end == text.data() + text.size() && std::isfinite(v),
         "{} takes a number, got '{}'", flag, text);
  return v;
}

/// "4.47 GiB": bytes for people.
inline std::string human(double bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (bytes >= 1024 && u < 4) {
    bytes /= 1024;
    ++u;
  }
  return u == 0 ? fmt::format("{:.0f} B", bytes) : fmt::format("{:.2f} {}", bytes, units[u]);
}

namespace detail {
/// Whether the command line asked for JSON (`--json`, set by `cli::main`): an error is then also
/// one JSON object on stdout, {"tool": …, "error": sentence}, for a program reading stdout.
inline bool& json_errors() {
  static bool on = false;
  return on;
}
}  // namespace detail

/// An error as every program prints it: "tool: sentence", on one line of stderr (and, under
/// `--json`, as one JSON object on stdout; `json = false` when stdout already holds the run's
/// JSON document).
inline void print_error(const char* tool, const std::exception& e,
                        bool json = detail::json_errors()) {
  std::fflush(stdout);
  std::string why = e.what();
  for (char& ch : why)
    if (ch == '\n') ch = ' ';
  std::fprintf(stderr, "%s: %s\n", tool, why.c_str());
  std::fflush(stderr);
  if (json) {
    const nlohmann::json j{{"tool", tool}, {"error", why}};
    std::printf("%s\n", j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
    std::fflush(stdout);
  }
}

/// Runs `run(argc, argv)`; an exception becomes "`tool`: message" (one line) on stderr, exit 2
/// (under `--json`, also `{"tool": …, "error": …}` on stdout).
/// `--version` anywhere prints "`tool` (tpx X.Y.Z)" and exits 0 before anything else runs.
/// Stdout is line-buffered, so a log shows each line as it is printed even when it is a file.
template <class Run>
int main(const char* tool, int argc, char** argv, Run&& run) {
  std::setvbuf(stdout, nullptr, _IOLBF, 1 << 16);
  for (int i = 1; i < argc; ++i) {
    if (std::string_view(argv[i]) == "--version") {
      std::printf("%s (tpx %s)\n", tool, tpx::version);
      return 0;
    }
    if (std::string_view(argv[i]) == "--json") detail::json_errors() = true;
  }
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    print_error(tool, e);
    return 2;
  }
}

#if TPX_HAVE_MPI
/// Under an MPI job: runs `step` — reading and checking the command line and input, no
/// collective — on every process (`mpi::agreed`). When it fails on any process, rank 0 prints the
/// cause once, every process waits for that (the launcher ends the job at the first process
/// that exits non-zero), and the exit status 2 is returned; nothing when it succeeded.
template <class Step>
std::optional<int> agreed_or_exit(const char* tool, mpi::communicator& world, Step&& step) {
  try {
    mpi::agreed(world, step);
    return std::nullopt;
  } catch (const tpx::error& e) {
    if (world.rank() == 0) print_error(tool, e);
    world.barrier();
    return 2;
  }
}

/// Under an MPI job of `processes` processes, what one rank per process rules out: `--backend
/// threads` (every process would run the whole group of ranks) and a `--tp` other than the
/// number of processes. `backend` and `tp` as the command line gave them (empty when not).
inline void expect_one_rank_per_process(std::string_view backend, std::optional<int> tp,
                                        int processes) {
  expect(backend != "threads",
         "--backend threads under an MPI launcher would run the whole group of ranks in each of "
         "the {} processes; leave --backend out (or run without the launcher)",
         processes);
  expect(!tp || *tp == processes,
         "--tp {} but the MPI launcher started {} processes; under MPI tp is the number of "
         "processes (mpirun -np {})",
         tp.value_or(0), processes, tp.value_or(0));
}

/// True when this program should run one rank per process: an MPI launcher started it, or
/// `--backend mpi` is on its command line.
inline bool wants_processes(int argc, char** argv) {
  for (int i = 1; i + 1 < argc; ++i)
    if (std::string_view(argv[i]) == "--backend" && std::string_view(argv[i + 1]) == "mpi")
      return true;
  return mpi::launched();
}
#endif

}  // namespace tpx::cli
