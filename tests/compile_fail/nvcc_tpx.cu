// Compiled by nvcc in the 'compile-fail, tpx headers in a .cu unit' test: tpx's headers are for
// the host C++ compiler, so nvcc stops at tpx's one #error sentence saying where they go.
#include <tpx/backend/cuda/backend.hpp>

int main() { return 0; }
