#pragma once
// The cuda platform of the test harnesses: device buffers, the device-local communicator (every
// rank a thread with its own stream, all on one GPU) and a cuBLASLt engine per rank on the rank's
// stream. Outputs are poisoned with NaN bytes (0xFF) before each run.

#include <doctest/doctest.h>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <initializer_list>
#include <span>
#include <vector>

#include "../linear_harness.hpp"
#include "tpx/backend/cuda/backend.hpp"

namespace tpx::test {

struct cuda_platform {
  using backend = cuda::local_backend;
  template <class T>
  using buffer = cuda::device_buffer<T>;

  template <class T>
  static buffer<T> store(const std::vector<T>& v) {
    return cuda::to_device(std::span<const T>(v));
  }
  template <class T>
  static std::vector<T> load(std::span<const T> s) {
    return cuda::to_host(s.data(), s.size());
  }
  template <class T>
  static void poison(buffer<T>& b) {
    if (b.empty()) return;
    TPX_CUDA(cudaMemset(b.data(), 0xFF, b.size() * sizeof(T)));
    TPX_CUDA(cudaDeviceSynchronize());
  }
  template <class Fn>
  static void run(int tp, Fn fn) {
    cuda::run_local(tp, [&](cuda::local_communicator& c) {
      cuda::gemm_engine engine(c.stream());
      cuda::check_streams(engine, c);
      fn(engine, c);
    });
  }
};

/// Replays a captured graph of every rank's work once per seed: every rank `load(seed)`s its
/// input, rank 0 launches the graph on its stream, every rank `check(seed)`s its output.
template <class Load, class Check>
void replay(cuda::local_communicator& c, const cuda::graph& g,
            std::initializer_list<unsigned> seeds, Load load, Check check) {
  for (const unsigned seed : seeds) {
    load(seed);
    c.barrier();  // every rank has loaded its input
    if (c.rank() == 0) {
      g.launch(c.stream());
      TPX_CUDA(cudaStreamSynchronize(c.stream()));
    }
    c.barrier();
    check(seed);
  }
}

/// Every rank's y, dx, dW and db errors are below `tolerance`.
inline void expect_close(const std::vector<linear_errors>& errors, double tolerance) {
  for (const linear_errors& e : errors) {
    CHECK(e[0] < tolerance);  // y (NaN or unwritten: infinite)
    CHECK(e[1] < tolerance);  // dx
    CHECK(e[2] < tolerance);  // dW
    CHECK(e[3] < tolerance);  // db
  }
}

}  // namespace tpx::test
