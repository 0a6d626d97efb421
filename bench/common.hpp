#pragma once
// What the tpx-bench translation units share: options, the report (text rows or JSON records),
// medians.

#include <fmt/format.h>

#include <algorithm>
#include <fstream>
#include <string>
#include <vector>

#include "tpx/core/extents.hpp"

namespace tpx::bench {

struct options {
  bool collectives = false, layers = false, blocks = false, io = false, plan = false, model = false,
       quick = false,
       json = false, gpu = false;
  std::vector<int> tps{2, 4, 8};
  index_t max_bytes = index_t{64} << 20;
  std::string command;
};

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

/// Output in both forms: text rows as nccl-tests prints them, or JSON records.
struct report {
  bool json;
  std::vector<std::string> records;
  void row(const std::string& text, const std::string& record) {
    if (json)
      records.push_back(record);
    else
      fmt::print("{}\n", text);
  }
  void line(const std::string& text) {
    if (!json) fmt::print("{}\n", text);
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

/// The linear styles on the cuda backend against direct cuBLASLt + collective calls
/// (bench/gpu.cpp; built when Meson finds CUDA and NCCL).
void bench_gpu(const options& o, report& out);

}  // namespace tpx::bench
