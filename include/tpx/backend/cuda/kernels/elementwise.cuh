#pragma once
/// \file
/// Element-wise maps: SwiGLU of a packed [gate | up] and its backward, the residual add.
/// Part of kernels.cuh (nvcc only); declared in kernels/signatures.inc.

#include "tpx/backend/cuda/kernels/device.cuh"

namespace tpx::inline v0::cuda::kernels {

namespace device {

template <class T>
__global__ void swiglu_forward(const T* h, std::int64_t ldh, std::int64_t rows, std::int64_t i,
                               T* a, std::int64_t lda) {
  for_each_element(rows, i, [&](std::int64_t r, std::int64_t j) {
    const typename acc<T>::type g = widen(h[r * ldh + j]), u = widen(h[r * ldh + i + j]);
    a[r * lda + j] = narrow<T>(g * sigmoid(g) * u);
  });
}

template <class T>
__global__ void swiglu_backward(const T* h, std::int64_t ldh, const T* da, std::int64_t ldda,
                                std::int64_t rows, std::int64_t i, T* dh, std::int64_t lddh) {
  using A = typename acc<T>::type;
  for_each_element(rows, i, [&](std::int64_t r, std::int64_t j) {
    const A g = widen(h[r * ldh + j]), u = widen(h[r * ldh + i + j]), d = widen(da[r * ldda + j]);
    const A s = sigmoid(g);
    dh[r * lddh + j] = narrow<T>(d * u * s * (A(1) + g * (A(1) - s)));
    dh[r * lddh + i + j] = narrow<T>(d * g * s);
  });
}

template <class T>
__global__ void add(T* a, std::int64_t lda, const T* b, std::int64_t ldb, std::int64_t rows,
                    std::int64_t cols) {
  for_each_element(rows, cols, [&](std::int64_t r, std::int64_t c) {
    a[r * lda + c] = narrow<T>(widen(a[r * lda + c]) + widen(b[r * ldb + c]));
  });
}

}  // namespace device

template <class T>
cudaError_t swiglu_forward(const T* h, std::int64_t ldh, std::int64_t rows, std::int64_t i, T* a,
                           std::int64_t lda, cudaStream_t stream) {
  if (rows <= 0 || i <= 0) return cudaSuccess;
  device::swiglu_forward<T>
      <<<device::blocks_for(rows * i), device::threads, 0, stream>>>(h, ldh, rows, i, a, lda);
  return cudaGetLastError();
}

template <class T>
cudaError_t swiglu_backward(const T* h, std::int64_t ldh, const T* da, std::int64_t ldda,
                            std::int64_t rows, std::int64_t i, T* dh, std::int64_t lddh,
                            cudaStream_t stream) {
  if (rows <= 0 || i <= 0) return cudaSuccess;
  device::swiglu_backward<T><<<device::blocks_for(rows * i), device::threads, 0, stream>>>(
      h, ldh, da, ldda, rows, i, dh, lddh);
  return cudaGetLastError();
}

template <class T>
cudaError_t add(T* a, std::int64_t lda, const T* b, std::int64_t ldb, std::int64_t rows,
                std::int64_t cols, cudaStream_t stream) {
  if (rows <= 0 || cols <= 0) return cudaSuccess;
  device::add<T>
      <<<device::blocks_for(rows * cols), device::threads, 0, stream>>>(a, lda, b, ldb, rows, cols);
  return cudaGetLastError();
}

}  // namespace tpx::inline v0::cuda::kernels
