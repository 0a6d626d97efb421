// tpx-checkpoint-demo: shard-on-read and gather-for-save of a packed gate|up MLP weight.
//
// Writes a bf16 checkpoint with a fused gate_up_proj [2·inter, hidden] and a down_proj
// [hidden, inter], then on `tp` thread ranks reads each rank's shard of both (gate_up packed
// colwise: each rank's rows of gate and of up; down rowwise: its columns), builds the layers from
// the shards, and saves them back from rank 0. Prints the bytes each rank read and checks that
// the saved file is bit-identical to the original.
//
//   tpx-checkpoint-demo [DIR] [--tp N]   (without DIR: a temporary directory, removed at the end)

#include <fmt/format.h>
#include <stdlib.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <string_view>
#include <vector>

#include "cli.hpp"
#include "tpx/backend/host/backend.hpp"
#include "tpx/io/checkpoint.hpp"
#include "tpx/io/gather.hpp"
#include "tpx/layer/linear.hpp"

namespace {

using namespace tpx;
namespace fs = std::filesystem;

std::string file_bytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

/// Reads a layer's weight shard from the checkpoint and builds the layer from it.
template <class Layer>
Layer load(const io::checkpoint& ckpt, host::gemm_engine& engine, host::communicator& comm,
           const std::string& tensor, const layer::linear_options& opts, std::uint64_t& bytes) {
  const shard::placement p = Layer::weight_placement(opts, comm.size());
  const shard::selection mine = ckpt.select(tensor, p, comm.rank());
  std::vector<float> w(static_cast<std::size_t>(mine.size()));
  bytes += ckpt.read_into<float>(tensor, mine, w);  // bf16 in the file → f32
  const std::vector<index_t> shape = mine.shape();
  return Layer(shard::from_shard, engine, comm,
               make_matrix<const float>(w.data(), shape[0], shape[1]), {}, opts);
}

/// A layer's weight shard, back in bf16, as `io::save` takes it.
template <class Layer>
io::shard_bytes to_save(const Layer& l, const std::string& tensor, std::vector<bf16>& keep) {
  keep = std::vector<bf16>(l.weight().data(), l.weight().data() + l.weight().size());
  return io::as_shard_bytes<bf16>(tensor, l.weight_placement(), std::span<const bf16>(keep));
}

constexpr std::string_view usage =
    "usage: tpx-checkpoint-demo [DIR] [--tp N]\n"
    "\n"
    "Writes a bf16 checkpoint DIR/model.safetensors with a packed gate_up_proj [20, 12] and a\n"
    "down_proj [12, 10]; on N thread ranks, each rank reads only its shard of both (gate|up "
    "packed\n"
    "colwise, down rowwise) and builds its layers from it; rank 0 saves them back to\n"
    "DIR/saved.safetensors. Prints each rank's pieces and bytes read; exits 0 when the saved file\n"
    "is bit-identical to the original, 1 when not, 2 on an error.\n"
    "\n"
    "  DIR       where the two files go (created if missing); default: a temporary directory,\n"
    "            removed at the end\n"
    "  --tp N    ranks, 1 to 65536 (default 3)\n"
    "  --help    this text\n"
    "  --version prints the program's and tpx's version\n";

int run(int argc, char** argv) {
  int tp = 3;
  fs::path dir;
  bool temporary = false;
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    if (a == "--help" || a == "-h") {
      fmt::print("{}", usage);
      return 0;
    } else if (a == "--tp") {
      expect(i + 1 < argc, "--tp needs a value\n{}", usage);
      tp = static_cast<int>(cli::whole_number("--tp", argv[++i], 1, max_ranks));
    } else if (a.starts_with("-")) {
      fail("unknown option '{}'\n{}", a, usage);
    } else {
      expect(dir.empty(), "one DIR at most, got '{}' and '{}'", dir.string(), a);
      dir = a;
    }
  }
  if (dir.empty()) {
    std::string t = (fs::temp_directory_path() / "tpx-checkpoint-demo-XXXXXX").string();
    expect(::mkdtemp(t.data()) != nullptr, "cannot create a temporary directory in {}: {}",
           fs::temp_directory_path().string(), std::strerror(errno));
    dir = t;
    temporary = true;
  }
  const index_t hidden = 12, inter = 10;
  std::vector<bf16> gate_up(static_cast<std::size_t>(2 * inter * hidden)),
      down(static_cast<std::size_t>(hidden * inter));
  for (std::size_t i = 0; i < gate_up.size(); ++i) gate_up[i] = bf16(0.01f * float(i % 97));
  for (std::size_t i = 0; i < down.size(); ++i) down[i] = bf16(-0.02f * float(i % 89));
  const std::string gu_name = "model.layers.0.mlp.gate_up_proj.weight",
                    down_name = "model.layers.0.mlp.down_proj.weight";
  const fs::path original = dir / "model.safetensors", saved = dir / "saved.safetensors";
  io::save_safetensors(original,
                       std::vector{io::as_tensor_bytes<bf16>(gu_name, {2 * inter, hidden}, gate_up),
                                   io::as_tensor_bytes<bf16>(down_name, {hidden, inter}, down)});

  using gate_up_t = layer::linear<style::colwise<>, host::backend, float>;
  using down_t = layer::linear<style::rowwise<>, host::backend, float>;
  const layer::linear_options gu_opts{.name = "gate_up_proj",
                                      .out_features = 2 * inter,
                                      .in_features = hidden,
                                      .blocks = {{inter}, {inter}}};
  const layer::linear_options down_opts{
      .name = "down_proj", .out_features = hidden, .in_features = inter};

  const io::checkpoint ckpt(dir);
  fmt::print("{}: {} tensors, read on {} ranks\n", original.string(), ckpt.names().size(), tp);
  std::vector<std::uint64_t> bytes(static_cast<std::size_t>(tp));
  std::vector<std::string> pieces(static_cast<std::size_t>(tp));
  host::gemm_engine engine;
  host::run(tp, [&](host::communicator& comm) {
    std::uint64_t& read = bytes[static_cast<std::size_t>(comm.rank())];
    const auto up = load<gate_up_t>(ckpt, engine, comm, gu_name, gu_opts, read);
    const auto dn = load<down_t>(ckpt, engine, comm, down_name, down_opts, read);
    std::string& text = pieces[static_cast<std::size_t>(comm.rank())];
    for (const shard::interval& p : up.pieces().parts)
      text += fmt::format("gate_up rows [{}, {}) ", p.begin, p.end);
    text += fmt::format("down cols [{}, {})", dn.slice().begin, dn.slice().end);

    std::vector<bf16> keep_up, keep_down;
    const std::vector<io::shard_bytes> shards{to_save(up, gu_name, keep_up),
                                              to_save(dn, down_name, keep_down)};
    io::save(comm, saved, shards);
  });
  for (int r = 0; r < tp; ++r)
    fmt::print("  rank {}: {} — read {} bytes\n", r, pieces[static_cast<std::size_t>(r)],
               bytes[static_cast<std::size_t>(r)]);
  const bool same = file_bytes(saved) == file_bytes(original);
  fmt::print("saved {}: {} the original\n", saved.string(),
             same ? "bit-identical to" : "DIFFERENT from");
  if (temporary) fs::remove_all(dir);
  return same ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  return tpx::cli::main("tpx-checkpoint-demo", argc, argv, run);
}
