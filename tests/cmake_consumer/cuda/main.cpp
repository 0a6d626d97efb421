// Links tpx::cuda from an installed tpx: a rowwise linear on the device-local communicator, whose
// forward launches the installed kernels (the bias epilogue's fallback, the reduction). Without a
// device it exits 77 after linking, so a machine without a GPU still proves the package links.
#include <tpx/backend/cuda/backend.hpp>
#include <tpx/layer/linear.hpp>

#include <cstdio>
#include <string>
#include <vector>

int main() {
  using namespace tpx;
  std::string why;
  if (!cuda::device_available(&why)) {
    std::printf("linked against tpx::cuda; no device here (%s)\n", why.c_str());
    return 77;
  }
  const std::vector<float> w{1, 2, 3, 4, 5, 6}, b{1, 1, 1}, x{1, 1};  // W [3 × 2], x [1 × 2]
  bool ok = true;
  cuda::run_local(2, [&](cuda::local_communicator& c) {
    cuda::gemm_engine engine(c.stream());
    layer::linear<style::rowwise<>, cuda::local_backend, float> l(
        engine, c, make_matrix(w.data(), 3, 2), b,
        {.name = "w", .out_features = 3, .in_features = 2});
    const std::vector<float> mine{x[static_cast<std::size_t>(c.rank())]};
    cuda::device_buffer<float> xd = cuda::to_device(std::span<const float>(mine)), yd(3);
    l.forward(make_matrix<const float>(xd.data(), 1, 1), make_matrix(yd.data(), 1, 3));
    if (cuda::to_host(yd.data(), 3, c.stream()) != std::vector<float>{4, 8, 12}) ok = false;
  });
  std::printf("%s\n", ok ? "tpx::cuda: rowwise forward on two ranks is right" : "wrong");
  return ok ? 0 : 1;
}
