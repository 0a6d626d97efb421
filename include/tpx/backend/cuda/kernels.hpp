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
/// Kept deliberately free of tpx's other headers (nvcc compiles this file). The element-wise work
/// of the layers (norms, embeddings, cross-entropy) is here too, behind `cuda::ops`; later styles
/// add theirs (activations, attention, routing) next to these.

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

namespace tpx::inline v0::cuda::kernels {

/// What a kernel accumulates T in: double for double, float for the rest.
template <class T>
struct accumulator {
  using type = float;
};
template <>
struct accumulator<double> {
  using type = double;
};
template <class T>
using accumulator_t = typename accumulator<T>::type;

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

/// RMSNorm of each row: y[t, :] = x[t, :] · r_t ⊙ w, r_t = 1 / sqrt(mean_j x[t, j]² + eps), for
/// [rows × cols] matrices with leading dimensions ldx, ldy.
template <class T>
cudaError_t rms_norm_forward(const T* x, std::int64_t ldx, std::int64_t rows, std::int64_t cols,
                             const T* w, double eps, T* y, std::int64_t ldy, cudaStream_t stream);

/// RMSNorm's gradients: dx (overwritten) and dw[j] = Σ_t dy[t, j] x[t, j] r_t (overwritten,
/// summed in row order). `r` is scratch for `rows` values.
template <class T>
cudaError_t rms_norm_backward(const T* x, std::int64_t ldx, const T* dy, std::int64_t lddy,
                              std::int64_t rows, std::int64_t cols, const T* w, double eps, T* dx,
                              std::int64_t lddx, T* dw, accumulator_t<T>* r, cudaStream_t stream);

/// y[t, :] = table[ids[t] − first, :] when first ≤ ids[t] < first + own, else 0; the table is
/// [own × hidden], contiguous.
template <class T>
cudaError_t embedding_forward(const std::int64_t* ids, std::int64_t tokens, const T* table,
                              std::int64_t first, std::int64_t own, std::int64_t hidden, T* y,
                              std::int64_t ldy, cudaStream_t stream);

/// dtable[ids[t] − first, :] += dy[t, :] for the tokens whose id the table holds, in token order
/// (deterministic: a thread per column).
template <class T>
cudaError_t embedding_backward(const std::int64_t* ids, std::int64_t tokens, const T* dy,
                               std::int64_t lddy, std::int64_t first, std::int64_t own,
                               std::int64_t hidden, T* dtable, cudaStream_t stream);

/// max[t] = max_j logits[t, j] (−∞ for no columns).
template <class T>
cudaError_t row_max(const T* logits, std::int64_t ld, std::int64_t rows, std::int64_t cols, T* max,
                    cudaStream_t stream);

/// sums[t] = Σ_j exp(logits[t, j] − max[t]); sums[rows + t] = the logit of target t when the
/// rank's columns [first, first + cols) hold it, else 0.
template <class T>
cudaError_t cross_entropy_sums(const T* logits, std::int64_t ld, std::int64_t rows,
                               std::int64_t cols, const T* max, const std::int64_t* targets,
                               std::int64_t first, T* sums, cudaStream_t stream);

/// dlogits[t, j] = (exp(logits[t, j] − max[t]) / sum[t] − [first + j = target t]) · scale, and 0
/// on rows whose target is `ignore`.
template <class T>
cudaError_t cross_entropy_backward(const T* logits, std::int64_t ld, std::int64_t rows,
                                   std::int64_t cols, const T* max, const T* sum,
                                   const std::int64_t* targets, std::int64_t first,
                                   std::int64_t ignore, double scale, T* dlogits,
                                   std::int64_t lddlogits, cudaStream_t stream);

/// Row moves of the experts (index maps computed on the host by the routing bookkeeping), for
/// [· × cols] matrices with leading dimensions ld*:
///   gather_rows   dst[r, :] = src[from[r], :] for r < rows (zeros where from[r] < 0)
///   spread_rows   dst[to[t·k + j], :] = w[t, j] · src[t, :] for t < rows, j < k, to ≥ 0 (w null:
///                 weight 1); every written dst row is written once
///   combine_rows  dst[t, :] = Σ_j w[t, j] · src[from[t·k + j], :] over from ≥ 0, j in order
///                 (w null: weight 1; no valid j: zeros)
///   row_dots      out[t, j] = from[t·k + j] ≥ 0 ? Σ_c a[t, c] · b[from[t·k + j], c] : 0
template <class T>
cudaError_t gather_rows(const T* src, std::int64_t lds, const std::int64_t* from, std::int64_t rows,
                        std::int64_t cols, T* dst, std::int64_t ldd, cudaStream_t stream);
template <class T>
cudaError_t spread_rows(const T* src, std::int64_t lds, const std::int64_t* to, const T* w,
                        std::int64_t ldw, std::int64_t rows, std::int64_t k, std::int64_t cols,
                        T* dst, std::int64_t ldd, cudaStream_t stream);
template <class T>
cudaError_t combine_rows(const T* src, std::int64_t lds, const std::int64_t* from, const T* w,
                         std::int64_t ldw, std::int64_t rows, std::int64_t k, std::int64_t cols,
                         T* dst, std::int64_t ldd, cudaStream_t stream);
template <class T>
cudaError_t row_dots(const T* a, std::int64_t lda, const T* b, std::int64_t ldb,
                     const std::int64_t* from, std::int64_t rows, std::int64_t k, std::int64_t cols,
                     T* out, std::int64_t ldo, cudaStream_t stream);

/// SwiGLU of a packed h = [gate | up] [rows × 2i]: a = silu(gate) ⊙ up [rows × i]; and its
/// backward dh = [da ⊙ up ⊙ silu'(gate) | da ⊙ silu(gate)].
template <class T>
cudaError_t swiglu_forward(const T* h, std::int64_t ldh, std::int64_t rows, std::int64_t i, T* a,
                           std::int64_t lda, cudaStream_t stream);
template <class T>
cudaError_t swiglu_backward(const T* h, std::int64_t ldh, const T* da, std::int64_t ldda,
                            std::int64_t rows, std::int64_t i, T* dh, std::int64_t lddh,
                            cudaStream_t stream);

/// a[r, c] += b[r, c] for [rows × cols] matrices.
template <class T>
cudaError_t add(T* a, std::int64_t lda, const T* b, std::int64_t ldb, std::int64_t rows,
                std::int64_t cols, cudaStream_t stream);

}  // namespace tpx::inline v0::cuda::kernels
