#pragma once
/// \file
/// The device kernels the cuda backend launches, declared for any C++ compiler. Their definitions
/// live in `kernels.cuh`, which exactly one translation unit of a program compiles with nvcc:
///
///   // tpx_kernels.cu
///   #include <tpx/backend/cuda/kernels.cuh>
///
/// (Meson: the `tpx_cuda` dependency builds that unit for you.) Each launcher enqueues on
/// `stream` and returns the launch's `cudaError_t`; callers check it. Element types: float,
/// double, __half and __nv_bfloat16; half types accumulate in float, in rank order, so every rank
/// of a reduction gets bit-identical results.
///
/// Kept deliberately free of tpx's other headers (nvcc compiles this file). The launchers are
/// listed once, with what each computes, in kernels/signatures.inc: this header expands that table
/// into their declarations and kernels.cuh into their instantiations, and each kernel is defined
/// in its domain's file under kernels/ (reductions, norm, embedding, loss, rows, element-wise).
/// The layers reach them through `cuda::ops`.

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

namespace tpx::inline v0::cuda::kernels {

/// What a kernel accumulates T in: double for double, float for the rest.
template <class T>
struct accumulator {
  using type = float;
};
template <>
struct accumulator<double> {
  using type = double;
};
template <class T>
using accumulator_t = typename accumulator<T>::type;

/// The most ranks a reduction reads from in one launch.
inline constexpr int max_inputs = 64;

/// Input pointers of a reduction, passed by value.
template <class T>
struct inputs {
  const T* at[max_inputs];
  int count;
};

#define TPX_CUDA_KERNEL(name, ...) \
  template <class T>               \
  cudaError_t name(__VA_ARGS__, cudaStream_t stream);
#include "tpx/backend/cuda/kernels/signatures.inc"
#undef TPX_CUDA_KERNEL

}  // namespace tpx::inline v0::cuda::kernels
