#pragma once
// What the tpx-bench translation units share: options, the report (text rows or JSON records),
// medians.

#include <fcntl.h>
#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <vector>

#include "tpx/core/error.hpp"
#include "tpx/core/extents.hpp"

namespace tpx::bench {

struct options {
  bool collectives = false, layers = false, blocks = false, io = false, plan = false, model = false,
       decode = false, quick = false, json = false, gpu = false;
  std::vector<int> tps{2, 4, 8};
  bool tps_given = false;       ///< --tp was on the command line
  std::string model_dir;        ///< --model-dir: decode this checkpoint instead of a synthetic one
  bool tokenize = false;        ///< --tokenize: the tokenizer's encoding speed (bench/tokenize.cpp)
  std::string tokenizer, text;  ///< --tokenize's tokenizer.json and --text's file
  index_t max_bytes = index_t{64} << 20;
  std::string command;
};

using clock_type = std::chrono::steady_clock;

/// Seconds since `t0`.
inline double since(clock_type::time_point t0) {
  return std::chrono::duration<double>(clock_type::now() - t0).count();
}

inline double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.0 : v[v.size() / 2];
}

inline std::string cpu_model() {
  std::ifstream in("/proc/cpuinfo");
  for (std::string line; std::getline(in, line);)
    if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
  return "unknown CPU";
}

/// Seconds to open `path`, read the whole file in 8 MiB preads into `buffer` (its size), close:
/// the plain sequential read the shard-reading benchmarks compare with.
inline double sequential_read(const std::filesystem::path& path, std::vector<std::byte>& buffer) {
  const auto t0 = clock_type::now();
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  expect(fd >= 0, "{}: cannot open", path.string());
  std::size_t at = 0;
  while (at < buffer.size()) {
    const ::ssize_t n =
        ::pread(fd, buffer.data() + at, std::min<std::size_t>(8 << 20, buffer.size() - at),
                static_cast<off_t>(at));
    expect(n > 0, "{}: short read", path.string());
    at += static_cast<std::size_t>(n);
  }
  ::close(fd);
  return since(t0);
}

/// Output in both forms: text rows as nccl-tests prints them, or JSON records. A row measured
/// against a goal says whether it met it: outside, the text ends in "<- outside goal" and the
/// record gains "within_goal": false (within: true); `outside` counts them for the last line.
struct report {
  bool json;
  std::vector<std::string> records;
  int outside = 0;
  bool silent = false;  ///< prints nothing (the processes of an MPI job but rank 0)
  void row(const std::string& text, std::string record, std::optional<bool> within = {}) {
    if (silent) return;
    if (within && !*within) ++outside;
    if (within) {
      record.pop_back();  // the closing brace
      record += fmt::format(",\"within_goal\":{}}}", *within);
    }
    if (json)
      records.push_back(std::move(record));
    else
      fmt::print("{}{}\n", text, within && !*within ? "  <- outside goal" : "");
  }
  void line(const std::string& text) {
    if (!json && !silent) fmt::print("{}\n", text);
  }
};

/// Shard-on-read throughput against a plain sequential read of the same file (bench/io.cpp).
void bench_io(const options& o, report& out);

/// Llama and Mixtral decoder layers in TP and TP+SP mode (bench/blocks.cpp).
void bench_blocks(const options& o, report& out);

/// Plan resolution of real models' tensor lists and headers (bench/plan.cpp).
void bench_plan(const options& o, report& out);

/// A whole causal LM from a synthetic checkpoint: load and forward time (bench/model.cpp).
void bench_model(const options& o, report& out);

/// A synthetic Llama-shaped bf16 checkpoint in a new temporary directory: heads of 64, half as
/// many KV heads (bench/model.cpp).
std::filesystem::path synthetic_llama(index_t hidden, index_t layers, index_t inter, index_t vocab);

/// Generation through the KV cache, weights in f32 and in bf16: prefill and decode tokens per
/// second against the bytes-per-step floor, collectives per decode step, cache bytes per token
/// (bench/decode.cpp).
void bench_decode(const options& o, report& out);

/// The tokenizer's encoding speed on a text file (bench/tokenize.cpp; built with PCRE2).
void bench_tokenize(const options& o, report& out);

/// The linear styles on the cuda backend against direct cuBLASLt + collective calls
/// (bench/gpu.cpp; built when Meson finds CUDA and NCCL).
void bench_gpu(const options& o, report& out);

}  // namespace tpx::bench
