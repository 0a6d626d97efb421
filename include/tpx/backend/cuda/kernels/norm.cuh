#pragma once
/// \file
/// RMSNorm forward and backward, a block per row.
/// Part of kernels.cuh (nvcc only); declared in kernels/signatures.inc.

#include "tpx/backend/cuda/kernels/device.cuh"

namespace tpx::inline v0::cuda::kernels {

namespace device {

template <class T>
__global__ void rms_norm_forward(const T* x, std::int64_t ldx, std::int64_t rows, std::int64_t cols,
                                 const T* w, double eps, T* y, std::int64_t ldy) {
  using A = typename acc<T>::type;
  __shared__ A buf[threads];
  for (std::int64_t t = blockIdx.x; t < rows; t += gridDim.x) {
    A ss = 0;
    for (std::int64_t j = threadIdx.x; j < cols; j += blockDim.x) {
      const A v = widen(x[t * ldx + j]);
      ss += v * v;
    }
    const A r = A(1) / sqrt(block_reduce(ss, buf, false) / A(cols) + A(eps));
    for (std::int64_t j = threadIdx.x; j < cols; j += blockDim.x)
      y[t * ldy + j] = narrow<T>(widen(x[t * ldx + j]) * r * widen(w[j]));
  }
}

/// dx of each row, and r_t for the weight gradient.
template <class T>
__global__ void rms_norm_input_grad(const T* x, std::int64_t ldx, const T* dy, std::int64_t lddy,
                                    std::int64_t rows, std::int64_t cols, const T* w, double eps,
                                    T* dx, std::int64_t lddx, typename acc<T>::type* r_out) {
  using A = typename acc<T>::type;
  __shared__ A buf[threads];
  for (std::int64_t t = blockIdx.x; t < rows; t += gridDim.x) {
    A ss = 0, dot = 0;  // Σ x², Σ dy w x
    for (std::int64_t j = threadIdx.x; j < cols; j += blockDim.x) {
      const A v = widen(x[t * ldx + j]);
      ss += v * v;
      dot += widen(dy[t * lddy + j]) * widen(w[j]) * v;
    }
    const A r = A(1) / sqrt(block_reduce(ss, buf, false) / A(cols) + A(eps));
    const A d = r * block_reduce(dot, buf, false);  // Σ dy w x̂
    for (std::int64_t j = threadIdx.x; j < cols; j += blockDim.x)
      dx[t * lddx + j] = narrow<T>(
          r * (widen(dy[t * lddy + j]) * widen(w[j]) - widen(x[t * ldx + j]) * r * d / A(cols)));
    if (threadIdx.x == 0) r_out[t] = r;
  }
}

template <class T>
__global__ void rms_norm_weight_grad(const T* x, std::int64_t ldx, const T* dy, std::int64_t lddy,
                                     std::int64_t rows, std::int64_t cols,
                                     const typename acc<T>::type* r, T* dw) {
  for (std::int64_t j = blockIdx.x * std::int64_t{blockDim.x} + threadIdx.x; j < cols;
       j += std::int64_t{gridDim.x} * blockDim.x) {
    typename acc<T>::type s = 0;
    for (std::int64_t t = 0; t < rows; ++t)
      s += widen(dy[t * lddy + j]) * widen(x[t * ldx + j]) * r[t];
    dw[j] = narrow<T>(s);
  }
}

}  // namespace device

template <class T>
cudaError_t rms_norm_forward(const T* x, std::int64_t ldx, std::int64_t rows, std::int64_t cols,
                             const T* w, double eps, T* y, std::int64_t ldy, cudaStream_t stream) {
  if (rows <= 0 || cols <= 0) return cudaSuccess;
  device::rms_norm_forward<T><<<device::row_blocks(rows), device::threads, 0, stream>>>(
      x, ldx, rows, cols, w, eps, y, ldy);
  return cudaGetLastError();
}

template <class T>
cudaError_t rms_norm_backward(const T* x, std::int64_t ldx, const T* dy, std::int64_t lddy,
                              std::int64_t rows, std::int64_t cols, const T* w, double eps, T* dx,
                              std::int64_t lddx, T* dw, accumulator_t<T>* r, cudaStream_t stream) {
  if (cols <= 0) return cudaSuccess;
  if (rows > 0) {
    device::rms_norm_input_grad<T><<<device::row_blocks(rows), device::threads, 0, stream>>>(
        x, ldx, dy, lddy, rows, cols, w, eps, dx, lddx, r);
    if (const cudaError_t e = cudaGetLastError(); e != cudaSuccess) return e;
  }
  device::rms_norm_weight_grad<T><<<device::blocks_for(cols), device::threads, 0, stream>>>(
      x, ldx, dy, lddy, rows, cols, r, dw);
  return cudaGetLastError();
}

}  // namespace tpx::inline v0::cuda::kernels
