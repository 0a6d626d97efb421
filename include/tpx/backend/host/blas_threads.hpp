#pragma once
/// \file
/// OpenBLAS's own threads while host ranks run: `tp` rank threads each calling a GEMM that starts
/// OpenBLAS's threads would put tp × cores threads on the cores. `blas_threads_scope` sets
/// OpenBLAS to `n` threads and restores the count it found; `blas_threads_for(tp)` is the count
/// `host::run` and `host::team` choose: one per rank when there are several ranks, unless the
/// environment says otherwise (OPENBLAS_NUM_THREADS, GOTO_NUM_THREADS or OMP_NUM_THREADS set:
/// then tpx leaves OpenBLAS as it is). With a CBLAS other than OpenBLAS nothing is set (its
/// functions are looked up as weak symbols: absent, they are null).
///
/// OpenBLAS's thread count belongs to the process: two groups running at once share it.

#include <cstdlib>
#include <optional>

extern "C" {
void openblas_set_num_threads(int num_threads) __attribute__((weak));
int openblas_get_num_threads(void) __attribute__((weak));
}

namespace tpx::inline v0::host {

/// Whether the process's CBLAS is OpenBLAS with a settable thread count.
inline bool blas_threads_settable() noexcept {
  return &openblas_set_num_threads != nullptr && &openblas_get_num_threads != nullptr;
}

/// OpenBLAS's thread count now; nullopt without OpenBLAS.
inline std::optional<int> blas_threads() noexcept {
  if (!blas_threads_settable()) return std::nullopt;
  return openblas_get_num_threads();
}

/// The OpenBLAS threads a group of `tp` host ranks should use: 1 when tp > 1; nullopt (leave it)
/// for one rank, or when the environment names a thread count.
inline std::optional<int> blas_threads_for(int tp) noexcept {
  for (const char* v : {"OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS", "OMP_NUM_THREADS"})
    if (std::getenv(v) != nullptr) return std::nullopt;
  if (tp <= 1) return std::nullopt;
  return 1;
}

/// Sets OpenBLAS to `n` threads (nullopt, or no OpenBLAS: nothing) and restores the count it
/// found when it ends.
class blas_threads_scope {
 public:
  explicit blas_threads_scope(std::optional<int> n) noexcept {
    if (!n || !blas_threads_settable()) return;
    before_ = openblas_get_num_threads();
    if (*before_ != *n) openblas_set_num_threads(*n);
  }
  ~blas_threads_scope() {
    if (before_ && openblas_get_num_threads() != *before_) openblas_set_num_threads(*before_);
  }
  blas_threads_scope(const blas_threads_scope&) = delete;
  blas_threads_scope& operator=(const blas_threads_scope&) = delete;

 private:
  std::optional<int> before_;
};

}  // namespace tpx::inline v0::host
