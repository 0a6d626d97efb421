// Compiled by nvcc in the 'compile-fail, kernels.hpp in a .cu unit' test: the kernels'
// declarations are the one tpx header a .cu unit of its own may include.
#include <tpx/backend/cuda/kernels.hpp>

__global__ void scale(float* p, float s) { p[threadIdx.x] *= s; }

int main() { return 0; }
