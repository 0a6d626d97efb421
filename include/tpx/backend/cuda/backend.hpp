#pragma once
/// \file
/// The cuda backend: cuBLASLt GEMMs, device buffers, and a communicator of the caller's choice —
/// `cuda::local_backend` (N ranks sharing one GPU, for tests and single-GPU runs) or
/// `cuda::nccl_backend` (one rank per GPU). Layers take it as `Backend`:
///
///   tpx::cuda::run_local(4, [&](tpx::cuda::local_communicator& comm) {
///     tpx::cuda::gemm_engine engine(comm.stream());  // the rank's stream, for both
///     tpx::layer::linear<tpx::style::colwise<>, tpx::cuda::local_backend, float> up(
///         engine, comm, weight, bias, options);
///     up.forward(x, y);  // device views
///   });
///
/// The engine and the communicator of a rank must enqueue on the same stream (GEMMs and
/// collectives are then ordered without events); `check_streams` says so when they do not.
/// Buffers are device memory. `tpx::linear` of every style, `rms_norm`, `vocab_embedding` (and its
/// tied head), `vocab_cross_entropy`, `experts` and `swiglu_mlp` run on it (their element-wise
/// work is `cuda::ops`); `cuda::ops` has no attention, routing or `chain` activation ops yet, so
/// `causal_attention` (and the blocks over it), `moe` and `chain` stop at a `static_assert` naming
/// the missing ops.

#include <span>

#include "tpx/backend/cuda/gemm.hpp"
#include "tpx/backend/cuda/local_communicator.hpp"
#include "tpx/backend/cuda/memory.hpp"
#include "tpx/backend/cuda/nccl.hpp"
#include "tpx/backend/cuda/ops.hpp"
#include "tpx/core/error.hpp"

namespace tpx::inline v0::cuda {

template <class Communicator>
struct backend {
  using engine = cuda::gemm_engine;
  using communicator = Communicator;
  /// The layers' element-wise work: kernels on the rank's stream.
  using ops = cuda::ops;
  template <class T>
  using buffer = device_buffer<T>;

  /// Copies host elements into device storage, replacing its contents.
  template <class T>
  static void upload(std::span<const T> from, buffer<T>& to) {
    cuda::upload(from, to);
  }
};

using local_backend = backend<local_communicator>;
using nccl_backend = backend<nccl_communicator>;

/// Checks that an engine and a communicator enqueue on the same stream.
template <class Communicator>
void check_streams(const gemm_engine& engine, const Communicator& comm) {
  expect(engine.stream() == comm.stream(),
         "cuda backend: rank {}'s GEMM engine and communicator use different streams; give the "
         "engine comm.stream() so GEMMs and collectives are ordered",
         comm.rank());
}

}  // namespace tpx::inline v0::cuda
