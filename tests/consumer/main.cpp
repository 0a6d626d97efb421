// Uses the umbrella header and runs a two-rank column-parallel layer.
#include <tpx/tpx.hpp>

#include <vector>

int main() {
  using namespace tpx;
  const std::vector<double> w{1, 2, 3, 4, 5, 6}, x{1, 1};  // W [3 × 2], x [1 × 2]
  host::gemm_engine engine;
  bool ok = true;
  host::run(2, [&](host::communicator& c) {
    layer::linear<style::colwise_gathered, host::backend, double> l(
        engine, c, make_matrix(w.data(), 3, 2), {},
        {.name = "w", .out_features = 3, .in_features = 2});
    std::vector<double> y(3);
    l.forward(make_matrix(x.data(), 1, 2), make_matrix(y.data(), 1, 3));
    if (y != std::vector<double>{3, 7, 11}) ok = false;
  });
  return ok ? 0 : 1;
}
