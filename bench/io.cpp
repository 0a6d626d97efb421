// tpx-bench --io: shard-on-read from a page-cached safetensors file.
//
// One bf16 weight [rows, cols] is written to a temporary file and read once, so that the file sits
// in the page cache. Then, for every style and tp, each rank in turn opens the checkpoint, reads
// its shard and closes it, timed from open to close; and interleaved with those reads, a plain
// sequential read of the whole file (open, pread in 8 MiB chunks into a buffer, close). The ratio
// is the slowest rank's throughput (shard bytes ÷ time) over the sequential read's (file bytes ÷
// time), medians over repetitions: goal ≥ 0.8. `read/shard` is the bytes the reads returned over
// the shards' bytes: goal 1.0. `time/seq` is the slowest rank's time over the time to read the
// whole file: what reading the shard saves against reading everything and slicing.

#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "common.hpp"
#include "tpx/io/checkpoint.hpp"
#include "tpx/io/writer.hpp"

namespace tpx::bench {
namespace {

struct io_style {
  const char* name;
  int dim;                // split dim of W [rows, cols]
  bool packed;            // two equal blocks (gate|up) split one by one
  bool to_float = false;  // convert bf16 → f32 on read
};

}  // namespace

void bench_io(const options& o, report& out) {
  const index_t rows = o.quick ? 1024 : 8192, cols = o.quick ? 512 : 4096;
  const int reps = o.quick ? 3 : 7;
  std::vector<bf16> w(static_cast<std::size_t>(rows * cols));
  for (std::size_t i = 0; i < w.size(); ++i) w[i] = bf16(static_cast<float>(i % 1000) / 1000.0f);

  std::string dir_name = (std::filesystem::temp_directory_path() / "tpx-bench-io-XXXXXX").string();
  expect(::mkdtemp(dir_name.data()) != nullptr, "cannot create a temporary directory");
  const std::filesystem::path dir = dir_name, file = dir / "model.safetensors";
  io::save_safetensors(file, std::vector{io::as_tensor_bytes<bf16>("w", {rows, cols}, w)});
  std::vector<std::byte> whole(static_cast<std::size_t>(std::filesystem::file_size(file)));
  sequential_read(file, whole);  // into the page cache

  out.line(fmt::format(
      "#\n# shard-on-read, bf16 weight [{}, {}] ({:.1f} MB file, page-cached); per rank: open, "
      "read the shard, close",
      rows, cols, static_cast<double>(whole.size()) / 1e6));
  out.line(
      "# ratio = slowest rank's GB/s ÷ sequential read of the whole file, same run (goal ≥ 0.8);"
      " read/shard = bytes read ÷ shard bytes (goal 1.0);\n# time/seq = slowest rank's time ÷ time "
      "to read the whole file");
  out.line(fmt::format("# {:>22} {:>3} {:>10} {:>9} {:>9} {:>7} {:>10} {:>9}", "style", "tp",
                       "shard(MB)", "seq GB/s", "shd GB/s", "ratio", "read/shard", "time/seq"));
  const std::vector<io_style> styles{{"colwise (rows)", 0, false},
                                     {"rowwise (columns)", 1, false},
                                     {"packed_colwise", 0, true},
                                     {"packed_rowwise", 1, true},
                                     {"colwise bf16→f32", 0, false, true}};
  std::vector<int> tps{1};
  for (int tp : o.tps)
    if (tp > 1) tps.push_back(tp);
  for (const io_style& s : styles)
    for (const int tp : tps) {
      if (tp == 1 && s.packed) continue;  // the same read as the unpacked style
      const index_t extent = s.dim == 0 ? rows : cols;
      const std::array<shard::block, 2> halves{{{extent / 2, 1}, {extent - extent / 2, 1}}};
      const shard::partition p =
          s.packed ? shard::partition::packed(halves, tp, shard::split_kind::balanced)
                   : shard::partition::split(extent, tp, shard::split_kind::balanced);
      const shard::placement place = shard::placement::split({rows, cols}, s.dim, p);

      std::vector<std::vector<double>> rank_times(static_cast<std::size_t>(tp));
      std::vector<double> seq_times;
      std::vector<std::vector<std::byte>> raw(static_cast<std::size_t>(tp));
      std::vector<std::vector<float>> converted(static_cast<std::size_t>(tp));
      std::uint64_t read = 0, shard_bytes = 0;
      for (int r = 0; r < tp; ++r) {
        const index_t n = shard::element_count(place.local_shape(r));
        raw[static_cast<std::size_t>(r)].assign(static_cast<std::size_t>(n) * 2, std::byte{1});
        if (s.to_float)
          converted[static_cast<std::size_t>(r)].assign(static_cast<std::size_t>(n), 1.0f);
      }
      for (int rep = 0; rep < reps; ++rep) {
        seq_times.push_back(sequential_read(file, whole));
        for (int r = 0; r < tp; ++r) {
          const shard::selection sel = place.of(r);
          const auto t0 = clock_type::now();
          std::uint64_t got = 0;
          {
            const io::checkpoint ck(file);
            got = s.to_float ? ck.read_into<float>("w", sel, converted[static_cast<std::size_t>(r)])
                             : ck.read_into<std::byte>("w", sel, raw[static_cast<std::size_t>(r)]);
          }
          rank_times[static_cast<std::size_t>(r)].push_back(since(t0));
          if (rep == 0) {
            read += got;
            shard_bytes += raw[static_cast<std::size_t>(r)].size();
          }
        }
      }
      const double seq_time = median(seq_times);
      const double seq_gbps = static_cast<double>(whole.size()) / seq_time / 1e9;
      double slowest = 1e300, longest = 0;
      for (int r = 0; r < tp; ++r) {
        const double t = median(rank_times[static_cast<std::size_t>(r)]);
        longest = std::max(longest, t);
        slowest = std::min(slowest,
                           static_cast<double>(raw[static_cast<std::size_t>(r)].size()) / t / 1e9);
      }
      const double shard_mb = static_cast<double>(raw[0].size()) / 1e6;
      const double bytes_ratio = static_cast<double>(read) / static_cast<double>(shard_bytes);
      out.row(
          fmt::format("  {:>22} {:>3} {:>10.2f} {:>9.2f} {:>9.2f} {:>7.3f} {:>10.3f} {:>9.3f}",
                      s.name, tp, shard_mb, seq_gbps, slowest, slowest / seq_gbps, bytes_ratio,
                      longest / seq_time),
          fmt::format(
              R"({{"kind":"shard_read","style":"{}","tp":{},"rows":{},"cols":{},"shard_mb":{:.4f},"sequential_gbps":{:.4f},"shard_gbps":{:.4f},"ratio":{:.4f},"read_over_shard":{:.4f},"time_over_sequential":{:.4f}}})",
              s.name, tp, rows, cols, shard_mb, seq_gbps, slowest, slowest / seq_gbps, bytes_ratio,
              longest / seq_time),
          slowest / seq_gbps >= 0.8 && bytes_ratio == 1.0);
    }
  std::error_code ignored;
  std::filesystem::remove_all(dir, ignored);
}

}  // namespace tpx::bench
