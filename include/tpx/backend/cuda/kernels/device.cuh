#pragma once
/// \file
/// What every kernel of kernels.cuh shares: widening half types to their accumulator and back,
/// the launch shape (grid-stride over elements, or a block per row), and a block reduction.
/// nvcc only.

#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>

#include "tpx/backend/cuda/kernels.hpp"

namespace tpx::inline v0::cuda::kernels::device {

template <class T>
using acc = accumulator<T>;

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

/// Blocks for a kernel that gives each row a block (rows beyond the grid loop).
inline unsigned row_blocks(std::int64_t rows) {
  return static_cast<unsigned>(rows < 65535 * 16 ? (rows < 1 ? 1 : rows) : 65535 * 16);
}

/// Calls f(r, c) for every element of a [rows × cols] grid, grid-stride.
template <class F>
__device__ void for_each_element(std::int64_t rows, std::int64_t cols, F f) {
  const std::int64_t n = rows * cols;
  for (std::int64_t e = blockIdx.x * std::int64_t{blockDim.x} + threadIdx.x; e < n;
       e += std::int64_t{gridDim.x} * blockDim.x)
    f(e / cols, e % cols);
}

/// The sum (or max) of every thread's `v` over the block, returned to every thread; `buf` is the
/// block's shared [threads] array. Every thread of the block must call it.
template <class A>
__device__ A block_reduce(A v, A* buf, bool max_op) {
  buf[threadIdx.x] = v;
  __syncthreads();
  for (unsigned s = blockDim.x / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) {
      const A o = buf[threadIdx.x + s];
      buf[threadIdx.x] =
          max_op ? (o > buf[threadIdx.x] ? o : buf[threadIdx.x]) : buf[threadIdx.x] + o;
    }
    __syncthreads();
  }
  const A r = buf[0];
  __syncthreads();  // buf is reused by the next call
  return r;
}

template <class A>
__device__ A sigmoid(A x) {
  return A(1) / (A(1) + exp(-x));
}

}  // namespace tpx::inline v0::cuda::kernels::device
