// Compiled as C++17 by the 'compile-fail, C++17' test: tpx stops at its own #error sentence.
#include <tpx/tpx.hpp>

int main() { return 0; }
