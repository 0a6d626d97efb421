#pragma once
/// \file
/// Definitions of the kernels declared in `kernels.hpp`. Compile this header in exactly one
/// translation unit of a program, with nvcc (it defines and instantiates the launchers). Each
/// domain's kernels live in their own file under kernels/; the instantiations come from the one
/// signature table, kernels/signatures.inc.

#include "tpx/backend/cuda/kernels/device.cuh"
#include "tpx/backend/cuda/kernels/elementwise.cuh"
#include "tpx/backend/cuda/kernels/embedding.cuh"
#include "tpx/backend/cuda/kernels/loss.cuh"
#include "tpx/backend/cuda/kernels/norm.cuh"
#include "tpx/backend/cuda/kernels/reduce.cuh"
#include "tpx/backend/cuda/kernels/rows.cuh"

namespace tpx::inline v0::cuda::kernels {

// Every launcher of the table for one element type: the table's parameters name the type T, so
// T is spelled as a macro for the length of each expansion (nothing below uses the name).
#define TPX_CUDA_KERNEL(name, ...) template cudaError_t name<T>(__VA_ARGS__, cudaStream_t);
#define T float
#include "tpx/backend/cuda/kernels/signatures.inc"
#undef T
#define T double
#include "tpx/backend/cuda/kernels/signatures.inc"
#undef T
#define T __half
#include "tpx/backend/cuda/kernels/signatures.inc"
#undef T
#define T __nv_bfloat16
#include "tpx/backend/cuda/kernels/signatures.inc"
#undef T
#undef TPX_CUDA_KERNEL

}  // namespace tpx::inline v0::cuda::kernels
