// Fuzz target: a safetensors file. Opening checks the header (length, JSON, dtypes, shapes,
// offsets); then every tensor is read whole and as a rank's shard of a 3-way split on each dim,
// as bytes and converted to float.
#include <vector>

#include "fuzz.hpp"
#include "tpx/io/checkpoint.hpp"

TPX_FUZZ_TARGET(safetensors) {
  using namespace tpx;
  const fuzz::input_file file(data, size, ".safetensors");
  fuzz::only_tpx_errors([&] {
    const io::checkpoint ck(file.path());
    for (const std::string& name : ck.names()) {
      const io::tensor_info& t = ck.info(name);
      if (t.size() > (index_t{1} << 16)) continue;  // bounded work per input
      fuzz::only_tpx_errors([&] { (void)ck.read<std::byte>(name); });
      fuzz::only_tpx_errors([&] { (void)ck.read<float>(name); });
      for (int dim = 0; dim < static_cast<int>(t.shape.size()); ++dim)
        fuzz::only_tpx_errors([&] {
          const shard::placement p = shard::placement::split(
              t.shape, dim,
              shard::partition::split(t.shape[static_cast<std::size_t>(dim)], 3,
                                      shard::split_kind::balanced),
              name);
          for (int rank = 0; rank < 3; ++rank) (void)ck.read<float>(name, p, rank);
        });
    }
  });
}
