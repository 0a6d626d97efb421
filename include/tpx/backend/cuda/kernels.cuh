#pragma once
/// \file
/// Definitions of the kernels declared in `kernels.hpp`. Compile this header in exactly one
/// translation unit of a program, with nvcc (it defines and instantiates the launchers).

#include <cuda_runtime.h>

#include <cstdint>

#include "tpx/backend/cuda/kernels.hpp"

namespace tpx::inline v0::cuda::kernels {

namespace device {

template <class T>
struct acc {
  using type = float;
};
template <>
struct acc<double> {
  using type = double;
};

template <class T>
__device__ typename acc<T>::type widen(T x) {
  return static_cast<typename acc<T>::type>(x);
}
template <>
__device__ inline float widen<__half>(__half x) {
  return __half2float(x);
}
template <>
__device__ inline float widen<__nv_bfloat16>(__nv_bfloat16 x) {
  return __bfloat162float(x);
}

template <class T>
__device__ T narrow(typename acc<T>::type x) {
  return static_cast<T>(x);
}
template <>
__device__ inline __half narrow<__half>(float x) {
  return __float2half_rn(x);
}
template <>
__device__ inline __nv_bfloat16 narrow<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}

constexpr int threads = 256;

inline unsigned blocks_for(std::int64_t n) {
  const std::int64_t b = (n + threads - 1) / threads;
  return static_cast<unsigned>(b < 65535 * 16 ? (b < 1 ? 1 : b) : 65535 * 16);
}

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
  const std::int64_t n = rows * cols;
  for (std::int64_t e = blockIdx.x * std::int64_t{blockDim.x} + threadIdx.x; e < n;
       e += std::int64_t{gridDim.x} * blockDim.x) {
    const std::int64_t i = e / cols, j = e % cols;
    c[i * ldc + j] = narrow<T>(widen(c[i * ldc + j]) + widen(bias[j]));
  }
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
  const std::int64_t n = rows * cols;
  for (std::int64_t e = blockIdx.x * std::int64_t{blockDim.x} + threadIdx.x; e < n;
       e += std::int64_t{gridDim.x} * blockDim.x) {
    const std::int64_t i = e / cols, j = e % cols;
    using A = typename acc<T>::type;
    c[i * ldc + j] = beta == 0.0 ? narrow<T>(A(0)) : narrow<T>(static_cast<A>(beta) * widen(c[i * ldc + j]));
  }
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

#define TPX_CUDA_KERNELS_FOR(T)                                                               \
  template cudaError_t reduce<T>(inputs<T>, T*, std::int64_t, bool, cudaStream_t);             \
  template cudaError_t add_bias<T>(T*, std::int64_t, std::int64_t, std::int64_t, const T*,     \
                                   cudaStream_t);                                              \
  template cudaError_t strided_sums<T>(const T*, std::int64_t, std::int64_t, std::int64_t,     \
                                       std::int64_t, T*, cudaStream_t);                        \
  template cudaError_t scale<T>(T*, std::int64_t, std::int64_t, std::int64_t, double, cudaStream_t);
TPX_CUDA_KERNELS_FOR(float)
TPX_CUDA_KERNELS_FOR(double)
TPX_CUDA_KERNELS_FOR(__half)
TPX_CUDA_KERNELS_FOR(__nv_bfloat16)
#undef TPX_CUDA_KERNELS_FOR

}  // namespace tpx::inline v0::cuda::kernels
