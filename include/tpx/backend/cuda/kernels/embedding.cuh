#pragma once
/// \file
/// The vocab-parallel embedding: lookup of the rank's rows, and its gradient in token order.
/// Part of kernels.cuh (nvcc only); declared in kernels/signatures.inc.

#include "tpx/backend/cuda/kernels/device.cuh"

namespace tpx::inline v0::cuda::kernels {

namespace device {

template <class T>
__global__ void embedding_forward(const std::int64_t* ids, std::int64_t tokens, const T* table,
                                  std::int64_t first, std::int64_t own, std::int64_t hidden, T* y,
                                  std::int64_t ldy) {
  for_each_element(tokens, hidden, [&](std::int64_t t, std::int64_t j) {
    const std::int64_t row = ids[t] - first;
    y[t * ldy + j] =
        0 <= row && row < own ? table[row * hidden + j] : narrow<T>(typename acc<T>::type(0));
  });
}

template <class T>
__global__ void embedding_backward(const std::int64_t* ids, std::int64_t tokens, const T* dy,
                                   std::int64_t lddy, std::int64_t first, std::int64_t own,
                                   std::int64_t hidden, T* dtable) {
  for (std::int64_t j = blockIdx.x * std::int64_t{blockDim.x} + threadIdx.x; j < hidden;
       j += std::int64_t{gridDim.x} * blockDim.x)
    for (std::int64_t t = 0; t < tokens; ++t) {
      const std::int64_t row = ids[t] - first;
      if (row < 0 || row >= own) continue;
      T& d = dtable[row * hidden + j];
      d = narrow<T>(widen(d) + widen(dy[t * lddy + j]));
    }
}

}  // namespace device

template <class T>
cudaError_t embedding_forward(const std::int64_t* ids, std::int64_t tokens, const T* table,
                              std::int64_t first, std::int64_t own, std::int64_t hidden, T* y,
                              std::int64_t ldy, cudaStream_t stream) {
  if (tokens <= 0 || hidden <= 0) return cudaSuccess;
  device::embedding_forward<T><<<device::blocks_for(tokens * hidden), device::threads, 0, stream>>>(
      ids, tokens, table, first, own, hidden, y, ldy);
  return cudaGetLastError();
}

template <class T>
cudaError_t embedding_backward(const std::int64_t* ids, std::int64_t tokens, const T* dy,
                               std::int64_t lddy, std::int64_t first, std::int64_t own,
                               std::int64_t hidden, T* dtable, cudaStream_t stream) {
  if (tokens <= 0 || hidden <= 0 || own <= 0) return cudaSuccess;
  device::embedding_backward<T><<<device::blocks_for(hidden), device::threads, 0, stream>>>(
      ids, tokens, dy, lddy, first, own, hidden, dtable);
  return cudaGetLastError();
}

}  // namespace tpx::inline v0::cuda::kernels
