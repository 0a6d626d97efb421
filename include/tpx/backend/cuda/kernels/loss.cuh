#pragma once
/// \file
/// The vocab-parallel cross-entropy's pieces: row maxima, exp sums and target logits, and the
/// logits' gradient.
/// Part of kernels.cuh (nvcc only); declared in kernels/signatures.inc.

#include "tpx/backend/cuda/kernels/device.cuh"

namespace tpx::inline v0::cuda::kernels {

namespace device {

template <class T>
__global__ void row_max(const T* logits, std::int64_t ld, std::int64_t rows, std::int64_t cols,
                        T* max) {
  using A = typename acc<T>::type;
  __shared__ A buf[threads];
  for (std::int64_t t = blockIdx.x; t < rows; t += gridDim.x) {
    A m = -INFINITY;
    for (std::int64_t j = threadIdx.x; j < cols; j += blockDim.x) {
      const A v = widen(logits[t * ld + j]);
      m = v > m ? v : m;
    }
    m = block_reduce(m, buf, true);
    if (threadIdx.x == 0) max[t] = narrow<T>(m);
  }
}

template <class T>
__global__ void cross_entropy_sums(const T* logits, std::int64_t ld, std::int64_t rows,
                                   std::int64_t cols, const T* max, const std::int64_t* targets,
                                   std::int64_t first, T* sums) {
  using A = typename acc<T>::type;
  __shared__ A buf[threads];
  for (std::int64_t t = blockIdx.x; t < rows; t += gridDim.x) {
    const A m = widen(max[t]);
    A s = 0;
    for (std::int64_t j = threadIdx.x; j < cols; j += blockDim.x)
      s += exp(widen(logits[t * ld + j]) - m);
    s = block_reduce(s, buf, false);
    if (threadIdx.x == 0) {
      const std::int64_t c = targets[t] - first;
      sums[t] = narrow<T>(s);
      sums[rows + t] = 0 <= c && c < cols ? logits[t * ld + c] : narrow<T>(A(0));
    }
  }
}

template <class T>
__global__ void cross_entropy_backward(const T* logits, std::int64_t ld, std::int64_t rows,
                                       std::int64_t cols, const T* max, const T* sum,
                                       const std::int64_t* targets, std::int64_t first,
                                       std::int64_t ignore, double scale, T* dlogits,
                                       std::int64_t lddlogits) {
  using A = typename acc<T>::type;
  for_each_element(rows, cols, [&](std::int64_t t, std::int64_t j) {
    const std::int64_t target = targets[t];
    A d = 0;
    if (target != ignore) {
      const A p = exp(widen(logits[t * ld + j]) - widen(max[t])) / widen(sum[t]);
      d = (p - (first + j == target ? A(1) : A(0))) * static_cast<A>(scale);
    }
    dlogits[t * lddlogits + j] = narrow<T>(d);
  });
}

}  // namespace device

template <class T>
cudaError_t row_max(const T* logits, std::int64_t ld, std::int64_t rows, std::int64_t cols, T* max,
                    cudaStream_t stream) {
  if (rows <= 0) return cudaSuccess;
  device::row_max<T>
      <<<device::row_blocks(rows), device::threads, 0, stream>>>(logits, ld, rows, cols, max);
  return cudaGetLastError();
}

template <class T>
cudaError_t cross_entropy_sums(const T* logits, std::int64_t ld, std::int64_t rows,
                               std::int64_t cols, const T* max, const std::int64_t* targets,
                               std::int64_t first, T* sums, cudaStream_t stream) {
  if (rows <= 0) return cudaSuccess;
  device::cross_entropy_sums<T><<<device::row_blocks(rows), device::threads, 0, stream>>>(
      logits, ld, rows, cols, max, targets, first, sums);
  return cudaGetLastError();
}

template <class T>
cudaError_t cross_entropy_backward(const T* logits, std::int64_t ld, std::int64_t rows,
                                   std::int64_t cols, const T* max, const T* sum,
                                   const std::int64_t* targets, std::int64_t first,
                                   std::int64_t ignore, double scale, T* dlogits,
                                   std::int64_t lddlogits, cudaStream_t stream) {
  if (rows <= 0 || cols <= 0) return cudaSuccess;
  device::cross_entropy_backward<T>
      <<<device::blocks_for(rows * cols), device::threads, 0, stream>>>(
          logits, ld, rows, cols, max, sum, targets, first, ignore, scale, dlogits, lddlogits);
  return cudaGetLastError();
}

}  // namespace tpx::inline v0::cuda::kernels
