#pragma once
/// \file
/// Reductions and GEMM epilogues: the device-local communicator's sum and max, a bias added
/// after a GEMM, the bias gradient's column sums, and scaling (beta).
/// Part of kernels.cuh (nvcc only); declared in kernels/signatures.inc.

#include "tpx/backend/cuda/kernels/device.cuh"

namespace tpx::inline v0::cuda::kernels {

namespace device {

template <class T>
__global__ void reduce(inputs<T> in, T* out, std::int64_t n, bool max_op) {
  for (std::int64_t i = blockIdx.x * std::int64_t{blockDim.x} + threadIdx.x; i < n;
       i += std::int64_t{gridDim.x} * blockDim.x) {
    typename acc<T>::type a = widen(in.at[0][i]);
    for (int q = 1; q < in.count; ++q) {
      const typename acc<T>::type b = widen(in.at[q][i]);
      a = max_op ? (b > a ? b : a) : a + b;
    }
    out[i] = narrow<T>(a);
  }
}

template <class T>
__global__ void add_bias(T* c, std::int64_t rows, std::int64_t cols, std::int64_t ldc,
                         const T* bias) {
  for_each_element(rows, cols, [&](std::int64_t i, std::int64_t j) {
    c[i * ldc + j] = narrow<T>(widen(c[i * ldc + j]) + widen(bias[j]));
  });
}

template <class T>
__global__ void strided_sums(const T* a, std::int64_t outer, std::int64_t outer_stride,
                             std::int64_t inner, std::int64_t inner_stride, T* out) {
  for (std::int64_t o = blockIdx.x * std::int64_t{blockDim.x} + threadIdx.x; o < outer;
       o += std::int64_t{gridDim.x} * blockDim.x) {
    typename acc<T>::type s = 0;
    for (std::int64_t i = 0; i < inner; ++i) s += widen(a[o * outer_stride + i * inner_stride]);
    out[o] = narrow<T>(s);
  }
}

template <class T>
__global__ void scale(T* c, std::int64_t rows, std::int64_t cols, std::int64_t ldc, double beta) {
  using A = typename acc<T>::type;
  for_each_element(rows, cols, [&](std::int64_t i, std::int64_t j) {
    c[i * ldc + j] =
        beta == 0.0 ? narrow<T>(A(0)) : narrow<T>(static_cast<A>(beta) * widen(c[i * ldc + j]));
  });
}

}  // namespace device

template <class T>
cudaError_t reduce(inputs<T> in, T* out, std::int64_t n, bool max_op, cudaStream_t stream) {
  if (n <= 0) return cudaSuccess;
  if (in.count < 1 || in.count > max_inputs) return cudaErrorInvalidValue;
  device::reduce<T><<<device::blocks_for(n), device::threads, 0, stream>>>(in, out, n, max_op);
  return cudaGetLastError();
}

template <class T>
cudaError_t add_bias(T* c, std::int64_t rows, std::int64_t cols, std::int64_t ldc, const T* bias,
                     cudaStream_t stream) {
  if (rows <= 0 || cols <= 0) return cudaSuccess;
  device::add_bias<T>
      <<<device::blocks_for(rows * cols), device::threads, 0, stream>>>(c, rows, cols, ldc, bias);
  return cudaGetLastError();
}

template <class T>
cudaError_t strided_sums(const T* a, std::int64_t outer, std::int64_t outer_stride,
                         std::int64_t inner, std::int64_t inner_stride, T* out,
                         cudaStream_t stream) {
  if (outer <= 0) return cudaSuccess;
  device::strided_sums<T><<<device::blocks_for(outer), device::threads, 0, stream>>>(
      a, outer, outer_stride, inner, inner_stride, out);
  return cudaGetLastError();
}

template <class T>
cudaError_t scale(T* c, std::int64_t rows, std::int64_t cols, std::int64_t ldc, double beta,
                  cudaStream_t stream) {
  if (rows <= 0 || cols <= 0) return cudaSuccess;
  device::scale<T>
      <<<device::blocks_for(rows * cols), device::threads, 0, stream>>>(c, rows, cols, ldc, beta);
  return cudaGetLastError();
}

}  // namespace tpx::inline v0::cuda::kernels
