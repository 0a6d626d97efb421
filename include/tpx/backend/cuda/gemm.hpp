#pragma once
/// \file
/// The cuda GEMM engine over cuBLASLt. Models `gemm::gemm_engine` for float and double and also
/// computes in __half and __nv_bfloat16 (fp32 accumulation for every type but double).
///
/// Row-major in, column-major cuBLASLt underneath: row-major C [m × n] is column-major Cᵀ, and
/// Cᵀ = op(B)ᵀ · op(A)ᵀ, so each call hands cuBLASLt B as its A and A as its B, with m and n
/// swapped; leading dimensions stay as they are.
///
/// - The bias of `gemm_args` is fused (CUBLASLT_EPILOGUE_BIAS) and the bias gradient of the
///   weight-gradient GEMM too (CUBLASLT_EPILOGUE_BGRADB: reduced over k from op(A), i.e. from
///   cuBLASLt's B); where the heuristic finds no algorithm with the epilogue for a shape and type,
///   the plain GEMM runs and a kernel adds the bias or sums the rows. `counters()` says which.
/// - One workspace, allocated when the engine is made; the heuristic's choice is cached per shape,
///   transposes, leading dimensions, operand alignment and epilogue, so a shape pays for its
///   heuristic once and the steady state calls nothing but cublasLtMatmul.
/// - `grouped_gemm` runs one cublasLtMatmul per group (experts of different token counts have
///   different shapes; each shape's plan is cached).
/// - Everything is enqueued on the engine's stream; nothing synchronises the host, so a forward
///   can be captured in a CUDA graph once every shape has been seen.
///
/// Needs the kernels of `kernels.cuh` linked in (Meson: the `tpx_cuda` dependency).

#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <cstdint>
#include <map>
#include <span>
#include <tuple>
#include <type_traits>

#include "tpx/backend/cuda/check.hpp"
#include "tpx/backend/cuda/kernels.hpp"
#include "tpx/backend/cuda/memory.hpp"
#include "tpx/core/dtype.hpp"
#include "tpx/gemm/engine.hpp"

namespace tpx::inline v0::cuda {

/// The CUDA data type of an element type.
template <class T>
inline constexpr cudaDataType_t data_type = std::is_same_v<T, float>    ? CUDA_R_32F
                                            : std::is_same_v<T, double> ? CUDA_R_64F
                                            : std::is_same_v<T, __half> ? CUDA_R_16F
                                                                        : CUDA_R_16BF;

/// Whether the cuda backend computes in T.
template <class T>
inline constexpr bool is_device_type =
    std::is_same_v<T, float> || std::is_same_v<T, double> || std::is_same_v<T, __half> ||
    std::is_same_v<T, __nv_bfloat16>;

class gemm_engine {
 public:
  /// Which path each GEMM epilogue took, since the engine was made.
  struct counters {
    std::int64_t gemms = 0;             ///< cublasLtMatmul calls
    std::int64_t plans = 0;             ///< heuristic queries (distinct shapes seen)
    std::int64_t fused_bias = 0;        ///< bias added by the epilogue
    std::int64_t fused_bias_grad = 0;   ///< bias gradient by the epilogue
    std::int64_t kernel_bias = 0;       ///< bias added by the kernel (no fused algorithm)
    std::int64_t kernel_bias_grad = 0;  ///< bias gradient by the kernel
  };

  /// An engine enqueuing on `stream`, with a workspace of `workspace_bytes` for cuBLASLt.
  explicit gemm_engine(cudaStream_t stream, std::size_t workspace_bytes = std::size_t{32} << 20)
      : stream_(stream), workspace_(workspace_bytes) {
    TPX_CUBLAS(cublasLtCreate(&handle_));
  }
  gemm_engine(const gemm_engine&) = delete;
  gemm_engine& operator=(const gemm_engine&) = delete;
  ~gemm_engine() {
    for (auto& [key, p] : plans_) p.release();
    if (handle_ != nullptr) cublasLtDestroy(handle_);
  }

  cudaStream_t stream() const noexcept { return stream_; }
  const counters& statistics() const noexcept { return counters_; }
  std::size_t workspace_bytes() const noexcept { return workspace_.size(); }

  template <class T>
  void gemm(const gemm::gemm_args<T>& g) {
    static_assert(is_device_type<T>,
                  "tpx::cuda::gemm_engine: computes in float, double, __half or __nv_bfloat16");
    gemm::check_gemm(g, "cuda::gemm_engine");
    const index_t m = g.c.rows(), n = g.c.cols();
    const index_t k = g.op_a == gemm::op::none ? g.a.cols() : g.a.rows();
    if (m == 0 || n == 0 || k == 0) {  // cuBLASLt wants non-empty operands
      if (m > 0 && n > 0)
        check_launch(kernels::scale(g.c.data(), m, n, g.c.ld(), as_double(g.beta), stream_));
      if (!g.bias.empty()) add_bias(g.c, g.bias);
      if (!g.bias_grad.empty()) row_sums(g.op_a, g.a, g.bias_grad);
      return;
    }
    const bool want_grad = !g.bias_grad.empty() && as_double(g.alpha) == 1.0;
    const epilogue e = !g.bias.empty() ? epilogue::bias
                       : want_grad     ? epilogue::bias_grad
                                       : epilogue::none;
    const void* epilogue_ptr = e == epilogue::bias ? static_cast<const void*>(g.bias.data())
                               : e == epilogue::bias_grad
                                   ? static_cast<const void*>(g.bias_grad.data())
                                   : nullptr;
    plan& p = plan_for<T>(g, m, n, k, e, epilogue_ptr);
    if (p.fused)
      TPX_CUBLAS(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER,
                                                &epilogue_ptr, sizeof(epilogue_ptr)));
    using S = std::conditional_t<std::is_same_v<T, double>, double, float>;
    const S alpha = static_cast<S>(as_double(g.alpha)), beta = static_cast<S>(as_double(g.beta));
    TPX_CUBLAS(cublasLtMatmul(handle_, p.desc, &alpha, g.b.data(), p.a, g.a.data(), p.b, &beta,
                              g.c.data(), p.c, g.c.data(), p.c, &p.algo, workspace_.data(),
                              workspace_.size(), stream_));
    ++counters_.gemms;
    const bool fused_bias = e == epilogue::bias && p.fused;
    const bool fused_grad = e == epilogue::bias_grad && p.fused;
    if (!g.bias.empty()) {
      ++(fused_bias ? counters_.fused_bias : counters_.kernel_bias);
      if (!fused_bias) add_bias(g.c, g.bias);
    }
    if (!g.bias_grad.empty()) {
      ++(fused_grad ? counters_.fused_bias_grad : counters_.kernel_bias_grad);
      if (!fused_grad) row_sums(g.op_a, g.a, g.bias_grad);
    }
  }

  /// One cublasLtMatmul per group.
  template <class T>
  void grouped_gemm(std::span<const gemm::gemm_args<T>> groups) {
    for (const gemm::gemm_args<T>& g : groups) gemm(g);
  }

  /// c[i, j] += bias[j] (a kernel).
  template <class T>
  void add_bias(matrix_view<T> c, std::span<const T> bias) {
    gemm::check_add_bias(c, bias, "cuda::gemm_engine");
    check_launch(kernels::add_bias(c.data(), c.rows(), c.cols(), c.ld(), bias.data(), stream_));
  }

  /// db[j] = Σ_i dy[i, j] (a kernel).
  template <class T>
  void bias_grad(matrix_view<const T> dy, std::span<T> db) {
    gemm::check_bias_grad(dy, db, "cuda::gemm_engine");
    check_launch(
        kernels::strided_sums(dy.data(), dy.cols(), 1, dy.rows(), dy.ld(), db.data(), stream_));
  }

 private:
  enum class epilogue : int { none, bias, bias_grad };

  struct plan {
    cublasLtMatmulDesc_t desc = nullptr;
    cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
    cublasLtMatmulAlgo_t algo{};
    bool fused = false;  ///< the epilogue is in desc
    void release() noexcept {
      if (desc != nullptr) cublasLtMatmulDescDestroy(desc);
      for (cublasLtMatrixLayout_t l : {a, b, c})
        if (l != nullptr) cublasLtMatrixLayoutDestroy(l);
      desc = nullptr;
      a = b = c = nullptr;
    }
  };

  /// dtype, op_a, op_b, m, n, k, lda, ldb, ldc, epilogue, alignment of a, b, c and the epilogue
  /// pointer.
  using key = std::tuple<int, int, int, index_t, index_t, index_t, index_t, index_t, index_t, int,
                         int, int, int, int>;

  static int alignment(const void* p) noexcept {
    const auto v = reinterpret_cast<std::uintptr_t>(p);
    int a = 1;
    while (a < 16 && (v % static_cast<std::uintptr_t>(a * 2)) == 0) a *= 2;
    return a;
  }

  template <class T>
  void row_sums(gemm::op o, matrix_view<const T> a, std::span<T> out) {
    if (o == gemm::op::transpose)  // op(A) = Aᵀ: column sums of A [k × m]
      check_launch(
          kernels::strided_sums(a.data(), a.cols(), 1, a.rows(), a.ld(), out.data(), stream_));
    else
      check_launch(
          kernels::strided_sums(a.data(), a.rows(), a.ld(), a.cols(), 1, out.data(), stream_));
  }

  template <class T>
  plan& plan_for(const gemm::gemm_args<T>& g, index_t m, index_t n, index_t k, epilogue e,
                 const void* epilogue_ptr) {
    const key kk{static_cast<int>(data_type<T>),
                 static_cast<int>(g.op_a),
                 static_cast<int>(g.op_b),
                 m,
                 n,
                 k,
                 g.a.ld(),
                 g.b.ld(),
                 g.c.ld(),
                 static_cast<int>(e),
                 alignment(g.a.data()),
                 alignment(g.b.data()),
                 alignment(g.c.data()),
                 alignment(epilogue_ptr)};
    if (const auto it = plans_.find(kk); it != plans_.end()) return it->second;
    const plan p = make_plan<T>(g, m, n, k, e, epilogue_ptr);
    ++counters_.plans;
    return plans_.emplace(kk, p).first->second;
  }

  template <class T>
  plan make_plan(const gemm::gemm_args<T>& g, index_t m, index_t n, index_t k, epilogue e,
                 const void* epilogue_ptr) {
    const cudaDataType_t type = data_type<T>;
    const cublasComputeType_t compute =
        std::is_same_v<T, double> ? CUBLAS_COMPUTE_64F : CUBLAS_COMPUTE_32F;
    const cudaDataType_t scale = std::is_same_v<T, double> ? CUDA_R_64F : CUDA_R_32F;
    const auto trans = [](gemm::op o) { return o == gemm::op::none ? CUBLAS_OP_N : CUBLAS_OP_T; };
    const auto u64 = [](index_t v) { return static_cast<std::uint64_t>(v); };
    const auto ld = [](index_t v) { return static_cast<std::int64_t>(v < 1 ? 1 : v); };
    plan p;
    cublasLtMatmulPreference_t pref = nullptr;
    try {
      // cuBLASLt's A is our B, stored column-major as [b.cols × b.rows]; its B is our A.
      const cublasOperation_t ta = trans(g.op_b), tb = trans(g.op_a);
      TPX_CUBLAS(cublasLtMatmulDescCreate(&p.desc, compute, scale));
      TPX_CUBLAS(
          cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)));
      TPX_CUBLAS(
          cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)));
      TPX_CUBLAS(
          cublasLtMatrixLayoutCreate(&p.a, type, u64(g.b.cols()), u64(g.b.rows()), ld(g.b.ld())));
      TPX_CUBLAS(
          cublasLtMatrixLayoutCreate(&p.b, type, u64(g.a.cols()), u64(g.a.rows()), ld(g.a.ld())));
      TPX_CUBLAS(cublasLtMatrixLayoutCreate(&p.c, type, u64(n), u64(m), ld(g.c.ld())));

      TPX_CUBLAS(cublasLtMatmulPreferenceCreate(&pref));
      const auto query = [&](bool with_epilogue) {
        const cublasLtEpilogue_t ep = !with_epilogue        ? CUBLASLT_EPILOGUE_DEFAULT
                                      : e == epilogue::bias ? CUBLASLT_EPILOGUE_BIAS
                                                            : CUBLASLT_EPILOGUE_BGRADB;
        TPX_CUBLAS(
            cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &ep, sizeof(ep)));
        const void* ptr = with_epilogue ? epilogue_ptr : nullptr;
        TPX_CUBLAS(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &ptr,
                                                  sizeof(ptr)));
        const std::uint64_t ws = workspace_.size();
        TPX_CUBLAS(cublasLtMatmulPreferenceSetAttribute(
            pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)));
        const std::uint32_t align[] = {static_cast<std::uint32_t>(alignment(g.b.data())),
                                       static_cast<std::uint32_t>(alignment(g.a.data())),
                                       static_cast<std::uint32_t>(alignment(g.c.data()))};
        TPX_CUBLAS(cublasLtMatmulPreferenceSetAttribute(
            pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &align[0], sizeof(align[0])));
        TPX_CUBLAS(cublasLtMatmulPreferenceSetAttribute(
            pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &align[1], sizeof(align[1])));
        TPX_CUBLAS(cublasLtMatmulPreferenceSetAttribute(
            pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &align[2], sizeof(align[2])));
        TPX_CUBLAS(cublasLtMatmulPreferenceSetAttribute(
            pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &align[2], sizeof(align[2])));
        cublasLtMatmulHeuristicResult_t result{};
        int found = 0;
        const cublasStatus_t s = cublasLtMatmulAlgoGetHeuristic(handle_, p.desc, p.a, p.b, p.c, p.c,
                                                                pref, 1, &result, &found);
        if (s == CUBLAS_STATUS_SUCCESS && found > 0) {
          p.algo = result.algo;
          return true;
        }
        if (!with_epilogue && s != CUBLAS_STATUS_NOT_SUPPORTED) TPX_CUBLAS(s);
        return false;
      };
      p.fused = e != epilogue::none && query(true);
      if (!p.fused && !query(false))
        fail(
            "cuda::gemm_engine: cuBLASLt has no algorithm for a {} GEMM of op(A) [{} × {}] · "
            "op(B) [{} × {}] (lda {}, ldb {}, ldc {}) within a {}-byte workspace",
            type == CUDA_R_32F   ? "float"
            : type == CUDA_R_64F ? "double"
            : type == CUDA_R_16F ? "half"
                                 : "bfloat16",
            m, k, k, n, g.a.ld(), g.b.ld(), g.c.ld(), workspace_.size());

    } catch (...) {
      if (pref != nullptr) cublasLtMatmulPreferenceDestroy(pref);
      p.release();
      throw;
    }
    cublasLtMatmulPreferenceDestroy(pref);
    return p;
  }

  cudaStream_t stream_;
  cublasLtHandle_t handle_ = nullptr;
  device_buffer<std::byte> workspace_;
  std::map<key, plan> plans_;
  counters counters_;
};

static_assert(gemm::gemm_engine<gemm_engine>);

}  // namespace tpx::inline v0::cuda
