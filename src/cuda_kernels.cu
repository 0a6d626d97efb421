// The one translation unit that compiles tpx's CUDA kernels (with nvcc). Meson builds it into
// the `tpx-cuda` dependency; a build without Meson compiles a file like this one once per program.
#include "tpx/backend/cuda/kernels.cuh"
