#pragma once
/// \file
/// Definitions of the kernels declared in `kernels.hpp`. Compile this header in exactly one
/// translation unit of a program, with nvcc (it defines and instantiates the launchers).

#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>

#include "tpx/backend/cuda/kernels.hpp"

namespace tpx::inline v0::cuda::kernels {

namespace device {

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

template <class A>
__device__ A sigmoid(A x) {
  return A(1) / (A(1) + exp(-x));
}

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

#define TPX_CUDA_KERNELS_FOR(T)                                                                    \
  template cudaError_t reduce<T>(inputs<T>, T*, std::int64_t, bool, cudaStream_t);                 \
  template cudaError_t add_bias<T>(T*, std::int64_t, std::int64_t, std::int64_t, const T*,         \
                                   cudaStream_t);                                                  \
  template cudaError_t strided_sums<T>(const T*, std::int64_t, std::int64_t, std::int64_t,         \
                                       std::int64_t, T*, cudaStream_t);                            \
  template cudaError_t scale<T>(T*, std::int64_t, std::int64_t, std::int64_t, double,              \
                                cudaStream_t);                                                     \
  template cudaError_t rms_norm_forward<T>(const T*, std::int64_t, std::int64_t, std::int64_t,     \
                                           const T*, double, T*, std::int64_t, cudaStream_t);      \
  template cudaError_t rms_norm_backward<T>(const T*, std::int64_t, const T*, std::int64_t,        \
                                            std::int64_t, std::int64_t, const T*, double, T*,      \
                                            std::int64_t, T*, accumulator_t<T>*, cudaStream_t);    \
  template cudaError_t embedding_forward<T>(const std::int64_t*, std::int64_t, const T*,           \
                                            std::int64_t, std::int64_t, std::int64_t, T*,          \
                                            std::int64_t, cudaStream_t);                           \
  template cudaError_t embedding_backward<T>(const std::int64_t*, std::int64_t, const T*,          \
                                             std::int64_t, std::int64_t, std::int64_t,             \
                                             std::int64_t, T*, cudaStream_t);                      \
  template cudaError_t row_max<T>(const T*, std::int64_t, std::int64_t, std::int64_t, T*,          \
                                  cudaStream_t);                                                   \
  template cudaError_t cross_entropy_sums<T>(const T*, std::int64_t, std::int64_t, std::int64_t,   \
                                             const T*, const std::int64_t*, std::int64_t, T*,      \
                                             cudaStream_t);                                        \
  template cudaError_t cross_entropy_backward<T>(                                                  \
      const T*, std::int64_t, std::int64_t, std::int64_t, const T*, const T*, const std::int64_t*, \
      std::int64_t, std::int64_t, double, T*, std::int64_t, cudaStream_t);                         \
  template cudaError_t gather_rows<T>(const T*, std::int64_t, const std::int64_t*, std::int64_t,   \
                                      std::int64_t, T*, std::int64_t, cudaStream_t);               \
  template cudaError_t spread_rows<T>(const T*, std::int64_t, const std::int64_t*, const T*,       \
                                      std::int64_t, std::int64_t, std::int64_t, std::int64_t, T*,  \
                                      std::int64_t, cudaStream_t);                                 \
  template cudaError_t combine_rows<T>(const T*, std::int64_t, const std::int64_t*, const T*,      \
                                       std::int64_t, std::int64_t, std::int64_t, std::int64_t, T*, \
                                       std::int64_t, cudaStream_t);                                \
  template cudaError_t row_dots<T>(const T*, std::int64_t, const T*, std::int64_t,                 \
                                   const std::int64_t*, std::int64_t, std::int64_t, std::int64_t,  \
                                   T*, std::int64_t, cudaStream_t);                                \
  template cudaError_t swiglu_forward<T>(const T*, std::int64_t, std::int64_t, std::int64_t, T*,   \
                                         std::int64_t, cudaStream_t);                              \
  template cudaError_t swiglu_backward<T>(const T*, std::int64_t, const T*, std::int64_t,          \
                                          std::int64_t, std::int64_t, T*, std::int64_t,            \
                                          cudaStream_t);                                           \
  template cudaError_t add<T>(T*, std::int64_t, const T*, std::int64_t, std::int64_t,              \
                              std::int64_t, cudaStream_t);
TPX_CUDA_KERNELS_FOR(float)
TPX_CUDA_KERNELS_FOR(double)
TPX_CUDA_KERNELS_FOR(__half)
TPX_CUDA_KERNELS_FOR(__nv_bfloat16)
#undef TPX_CUDA_KERNELS_FOR

}  // namespace tpx::inline v0::cuda::kernels
