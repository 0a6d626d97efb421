#pragma once
/// \file
/// Checked calls into the CUDA runtime and cuBLAS(Lt): a failing return code becomes a
/// `tpx::error` naming the call, where it was made (file:line) and the library's own message.
///
///   TPX_CUDA(cudaMemsetAsync(p, 0, n, stream));
///   TPX_CUBLAS(cublasLtMatmul(...));
///
/// NCCL's check (with `ncclGetLastError`) lives in `nccl.hpp`, so code without NCCL needs no
/// NCCL headers. Host-API only: any C++20 compiler.

#include <cublasLt.h>
#include <cuda_runtime_api.h>

#include <source_location>
#include <string_view>

#include "tpx/core/error.hpp"

namespace tpx::inline v0::cuda {

/// Throws unless `status` is cudaSuccess. `hint` is added to the message when not empty.
inline void check(cudaError_t status, std::string_view call,
                  std::source_location at = std::source_location::current(),
                  std::string_view hint = {}) {
  if (status == cudaSuccess) return;
  fail("CUDA: {} failed at {}:{}: {} ({}){}{}", call, tpx::detail::file_name(at.file_name()),
       at.line(), cudaGetErrorString(status), cudaGetErrorName(status), hint.empty() ? "" : "; ",
       hint);
}

/// Throws unless `status` is CUBLAS_STATUS_SUCCESS (cuBLAS and cuBLASLt share the codes).
inline void check(cublasStatus_t status, std::string_view call,
                  std::source_location at = std::source_location::current(),
                  std::string_view hint = {}) {
  if (status == CUBLAS_STATUS_SUCCESS) return;
  fail("cuBLAS: {} failed at {}:{}: {} ({}){}{}", call, tpx::detail::file_name(at.file_name()),
       at.line(), cublasLtGetStatusString(status), cublasLtGetStatusName(status),
       hint.empty() ? "" : "; ", hint);
}

/// Checks what one of tpx's kernel launchers (kernels.hpp) returned.
inline void check_launch(cudaError_t status,
                         std::source_location at = std::source_location::current()) {
  check(status, "a tpx kernel launch", at,
        "the kernels of tpx/backend/cuda/kernels.cuh (is that unit compiled for this GPU?)");
}

}  // namespace tpx::inline v0::cuda

/// Checks a CUDA runtime call: `TPX_CUDA(cudaStreamSynchronize(s));`
#define TPX_CUDA(call) ::tpx::cuda::check((call), #call)
/// Checks a cuBLAS or cuBLASLt call.
#define TPX_CUBLAS(call) ::tpx::cuda::check((call), #call)
