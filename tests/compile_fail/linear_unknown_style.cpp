// Must not compile: a style with no linear layer gets tpx::linear's own message.
#include "tpx/backend/host/backend.hpp"
#include "tpx/layer/linear.hpp"

struct my_style {};
tpx::layer::linear<my_style, tpx::host::backend, float>* p = nullptr;
void touch() {
  (void)sizeof(tpx::layer::linear<my_style, tpx::host::backend, float>);
}
