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
/// Kept deliberately free of tpx's other headers (nvcc compiles this file); later styles add their
/// kernels (activations, norms, attention, routing) here, next to these.

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

namespace tpx::inline v0::cuda::kernels {

/// The most ranks a reduction reads from in one launch.
inline constexpr int max_inputs = 64;

/// Input pointers of a reduction, passed by value.
template <class T>
struct inputs {
  const T* at[max_inputs];
  int count;
};

/// out[i] = in[0][i] ⊕ in[1][i] ⊕ … for i < n, ⊕ = + (max_op false) or max. `out` may be one of
/// the inputs (each element is read from every input before it is written).
template <class T>
cudaError_t reduce(inputs<T> in, T* out, std::int64_t n, bool max_op, cudaStream_t stream);

/// c[i, j] += bias[j] for a [rows × cols] matrix with leading dimension ldc.
template <class T>
cudaError_t add_bias(T* c, std::int64_t rows, std::int64_t cols, std::int64_t ldc, const T* bias,
                     cudaStream_t stream);

/// out[o] = Σ_i a[o · outer_stride + i · inner_stride] for o < outer, i < inner: column sums of
/// a row-major matrix (outer = cols, outer_stride = 1, inner_stride = ld) or row sums.
template <class T>
cudaError_t strided_sums(const T* a, std::int64_t outer, std::int64_t outer_stride,
                         std::int64_t inner, std::int64_t inner_stride, T* out,
                         cudaStream_t stream);

/// c[i, j] = beta · c[i, j] for a [rows × cols] matrix with leading dimension ldc (beta = 0
/// writes zeros, whatever c held).
template <class T>
cudaError_t scale(T* c, std::int64_t rows, std::int64_t cols, std::int64_t ldc, double beta,
                  cudaStream_t stream);

}  // namespace tpx::inline v0::cuda::kernels
