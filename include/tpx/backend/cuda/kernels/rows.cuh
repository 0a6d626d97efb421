#pragma once
/// \file
/// The experts' row moves by index maps (computed on the host by the routing bookkeeping).
/// Part of kernels.cuh (nvcc only); declared in kernels/signatures.inc.

#include "tpx/backend/cuda/kernels/device.cuh"

namespace tpx::inline v0::cuda::kernels {

namespace device {

template <class T>
__global__ void gather_rows(const T* src, std::int64_t lds, const std::int64_t* from,
                            std::int64_t rows, std::int64_t cols, T* dst, std::int64_t ldd) {
  for_each_element(rows, cols, [&](std::int64_t r, std::int64_t c) {
    const std::int64_t s = from[r];
    dst[r * ldd + c] = s >= 0 ? src[s * lds + c] : narrow<T>(typename acc<T>::type(0));
  });
}

template <class T>
__global__ void spread_rows(const T* src, std::int64_t lds, const std::int64_t* to, const T* w,
                            std::int64_t ldw, std::int64_t rows, std::int64_t k, std::int64_t cols,
                            T* dst, std::int64_t ldd) {
  for_each_element(rows * k, cols, [&](std::int64_t tj, std::int64_t c) {
    const std::int64_t d = to[tj], t = tj / k, j = tj % k;
    if (d < 0) return;
    dst[d * ldd + c] = w == nullptr ? src[t * lds + c]
                                    : narrow<T>(widen(w[t * ldw + j]) * widen(src[t * lds + c]));
  });
}

template <class T>
__global__ void combine_rows(const T* src, std::int64_t lds, const std::int64_t* from, const T* w,
                             std::int64_t ldw, std::int64_t rows, std::int64_t k, std::int64_t cols,
                             T* dst, std::int64_t ldd) {
  for_each_element(rows, cols, [&](std::int64_t t, std::int64_t c) {
    typename acc<T>::type s = 0;
    for (std::int64_t j = 0; j < k; ++j) {
      const std::int64_t r = from[t * k + j];
      if (r < 0) continue;
      const typename acc<T>::type v = widen(src[r * lds + c]);
      s += w == nullptr ? v : widen(w[t * ldw + j]) * v;
    }
    dst[t * ldd + c] = narrow<T>(s);
  });
}

template <class T>
__global__ void row_dots(const T* a, std::int64_t lda, const T* b, std::int64_t ldb,
                         const std::int64_t* from, std::int64_t rows, std::int64_t k,
                         std::int64_t cols, T* out, std::int64_t ldo) {
  using A = typename acc<T>::type;
  __shared__ A buf[threads];
  for (std::int64_t tj = blockIdx.x; tj < rows * k; tj += gridDim.x) {
    const std::int64_t t = tj / k, j = tj % k, r = from[tj];
    A s = 0;
    if (r >= 0)
      for (std::int64_t c = threadIdx.x; c < cols; c += blockDim.x)
        s += widen(a[t * lda + c]) * widen(b[r * ldb + c]);
    s = block_reduce(s, buf, false);
    if (threadIdx.x == 0) out[t * ldo + j] = narrow<T>(s);
  }
}

}  // namespace device

template <class T>
cudaError_t gather_rows(const T* src, std::int64_t lds, const std::int64_t* from, std::int64_t rows,
                        std::int64_t cols, T* dst, std::int64_t ldd, cudaStream_t stream) {
  if (rows <= 0 || cols <= 0) return cudaSuccess;
  device::gather_rows<T><<<device::blocks_for(rows * cols), device::threads, 0, stream>>>(
      src, lds, from, rows, cols, dst, ldd);
  return cudaGetLastError();
}

template <class T>
cudaError_t spread_rows(const T* src, std::int64_t lds, const std::int64_t* to, const T* w,
                        std::int64_t ldw, std::int64_t rows, std::int64_t k, std::int64_t cols,
                        T* dst, std::int64_t ldd, cudaStream_t stream) {
  if (rows <= 0 || k <= 0 || cols <= 0) return cudaSuccess;
  device::spread_rows<T><<<device::blocks_for(rows * k * cols), device::threads, 0, stream>>>(
      src, lds, to, w, ldw, rows, k, cols, dst, ldd);
  return cudaGetLastError();
}

template <class T>
cudaError_t combine_rows(const T* src, std::int64_t lds, const std::int64_t* from, const T* w,
                         std::int64_t ldw, std::int64_t rows, std::int64_t k, std::int64_t cols,
                         T* dst, std::int64_t ldd, cudaStream_t stream) {
  if (rows <= 0 || cols <= 0) return cudaSuccess;
  device::combine_rows<T><<<device::blocks_for(rows * cols), device::threads, 0, stream>>>(
      src, lds, from, w, ldw, rows, k, cols, dst, ldd);
  return cudaGetLastError();
}

template <class T>
cudaError_t row_dots(const T* a, std::int64_t lda, const T* b, std::int64_t ldb,
                     const std::int64_t* from, std::int64_t rows, std::int64_t k, std::int64_t cols,
                     T* out, std::int64_t ldo, cudaStream_t stream) {
  if (rows <= 0 || k <= 0) return cudaSuccess;
  device::row_dots<T><<<device::row_blocks(rows * k), device::threads, 0, stream>>>(
      a, lda, b, ldb, from, rows, k, cols, out, ldo);
  return cudaGetLastError();
}

}  // namespace tpx::inline v0::cuda::kernels
