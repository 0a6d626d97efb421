// Reading and writing safetensors files: every dtype, a checkpoint written by an independent
// stdlib-only Python writer, atomic writes, and every kind of bad file as a sentence naming the
// file and the tensor.

#include <doctest/doctest.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "../error_of.hpp"
#include "io_harness.hpp"
#include "tpx/io/checkpoint.hpp"
#include "tpx/io/writer.hpp"

using namespace tpx;
namespace fs = std::filesystem;

namespace {

/// The Python writer's value of element k of the tensor with seed t (see write_checkpoint.py).
double py_float(int t, index_t k) {
  return static_cast<double>((k + 7 * t) % 251 - 125) / 8.0;
}
std::int64_t py_int(int t, index_t k) {
  return (k + 7 * t) % 100 - 50;
}

fs::path python_dir() {
  const char* dir = std::getenv("TPX_PY_CHECKPOINTS");
  REQUIRE_MESSAGE(dir != nullptr, "TPX_PY_CHECKPOINTS is not set: run this test through meson");
  return dir;
}

template <class T>
void check_float_tensor(const io::checkpoint& ck, const std::string& name, int seed) {
  const std::vector<T> got = ck.read<T>(name);
  CHECK(static_cast<index_t>(got.size()) == ck.info(name).size());
  for (std::size_t k = 0; k < got.size(); ++k) {
    CAPTURE(name);
    CAPTURE(k);
    CHECK(static_cast<double>(got[k]) == py_float(seed, static_cast<index_t>(k)));
  }
}

/// The message of the tpx::error that opening `path` ends with.
std::string open_error(const fs::path& path) {
  return test::error_of([&] { io::checkpoint ck(path); });
}

}  // namespace

TEST_CASE("a checkpoint written by the stdlib-only Python writer reads back exactly") {
  const io::checkpoint ck(python_dir() / "py_single.safetensors");
  CHECK(ck.names().size() == 13);
  CHECK(ck.files()[0].metadata().at("writer") == "python stdlib");
  CHECK(ck.info("w.f32").dtype == io::file_dtype::f32);
  CHECK(ck.info("w.f32").shape == std::vector<index_t>{5, 7});
  CHECK(ck.info("experts").shape == std::vector<index_t>{3, 4, 5});
  CHECK(ck.info("scalar").shape.empty());

  check_float_tensor<double>(ck, "w.f32", 1);
  check_float_tensor<float>(ck, "w.f64", 2);
  check_float_tensor<float>(ck, "w.bf16", 3);
  check_float_tensor<double>(ck, "w.f16", 4);
  check_float_tensor<bf16>(ck, "experts", 13);
  check_float_tensor<f16>(ck, "w.bf16", 3);  // bf16 → f16: exact for these values
  check_float_tensor<float>(ck, "scalar", 11);
  CHECK(ck.read<float>("empty").empty());

  const auto ints = [&](const std::string& name, int seed, auto type) {
    using I = decltype(type);
    const std::vector<std::byte> raw = ck.read<std::byte>(name);
    REQUIRE(raw.size() == static_cast<std::size_t>(ck.info(name).size()) * sizeof(I));
    for (std::size_t k = 0; k < raw.size() / sizeof(I); ++k) {
      I v;
      std::memcpy(&v, raw.data() + k * sizeof(I), sizeof(I));
      CHECK(static_cast<std::int64_t>(v) == py_int(seed, static_cast<index_t>(k)));
    }
  };
  ints("ids.i64", 5, std::int64_t{});
  ints("ids.i32", 6, std::int32_t{});
  ints("ids.i16", 7, std::int16_t{});
  ints("ids.i8", 8, std::int8_t{});
  const std::vector<std::byte> u8 = ck.read<std::byte>("bytes.u8");
  for (std::size_t k = 0; k < u8.size(); ++k)
    CHECK(std::to_integer<int>(u8[k]) == static_cast<int>((k + 63) % 256));
  const std::vector<std::byte> mask = ck.read<std::byte>("mask.bool");
  for (std::size_t k = 0; k < mask.size(); ++k) CHECK(std::to_integer<int>(mask[k]) == int(k % 2));
}

TEST_CASE("a Python-written index set reads every tensor from the file the index names") {
  const io::checkpoint ck(python_dir() / "py-model.safetensors.index.json");
  CHECK(ck.names() == std::vector<std::string>{"lm_head.weight", "model.embed.weight",
                                               "model.o.weight", "model.q.weight"});
  CHECK(ck.files().size() == 2);
  CHECK(ck.file_of("model.o.weight").path().filename() == "py-model-00002-of-00002.safetensors");
  check_float_tensor<float>(ck, "model.embed.weight", 21);
  check_float_tensor<float>(ck, "model.q.weight", 22);
  check_float_tensor<double>(ck, "model.o.weight", 23);
  check_float_tensor<float>(ck, "lm_head.weight", 24);
}

TEST_CASE("integers do not convert to a compute type; the error says to read bytes") {
  const io::checkpoint ck(python_dir() / "py_single.safetensors");
  CHECK_THROWS_WITH_AS(ck.read<float>("ids.i64"),
                       doctest::Contains("tensor 'ids.i64' is I64, which does not convert to f32"),
                       error);
  CHECK_THROWS_WITH_AS(ck.read<float>("nope"), doctest::Contains("no tensor named 'nope'"), error);
}

TEST_CASE("what tpx writes, tpx and the format read back bit for bit, in every float dtype") {
  test::temp_dir dir;
  const std::vector<double> d{1.0, -2.5, 3.25, 1e-300, -0.0, 6.0};
  const std::vector<float> f{1.5f, -2.0f, 1e-30f, 4.0f};
  std::vector<bf16> b;
  std::vector<f16> h;
  for (int i = 0; i < 6; ++i) {
    b.push_back(bf16::from_bits(static_cast<std::uint16_t>(0x3F80 + 3 * i)));
    h.push_back(f16::from_bits(static_cast<std::uint16_t>(0x3C00 + 5 * i)));
  }
  const std::vector<io::tensor_bytes> tensors{
      io::as_tensor_bytes<double>("d", {2, 3}, d), io::as_tensor_bytes<float>("f", {4}, f),
      io::as_tensor_bytes<bf16>("b", {3, 2}, b), io::as_tensor_bytes<f16>("h", {6}, h)};
  const fs::path file = dir / "model.safetensors";
  io::save_safetensors(file, tensors, {{"format", "pt"}});

  const std::string bytes = test::read_file(file);
  std::uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<unsigned char>(bytes[i]);
  CHECK(n % 8 == 0);  // the data section starts 8-byte aligned
  CHECK(bytes.size() == 8 + n + 48 + 16 + 12 + 12);

  const io::checkpoint ck(dir.path);  // a directory holding model.safetensors
  CHECK(ck.files()[0].metadata().at("format") == "pt");
  CHECK(ck.read<double>("d") == d);
  CHECK(ck.read<float>("f") == f);
  CHECK(ck.read<bf16>("b") == b);
  CHECK(ck.read<f16>("h") == h);
  CHECK(ck.read<double>("f") == std::vector<double>(f.begin(), f.end()));
  // Narrowing rounds to nearest even: 1 + 2^-9 in f32 is a tie between two bf16 values.
  const std::vector<float> tie{1.0f + 0x1p-9f};
  io::save_safetensors(dir / "tie.safetensors",
                       std::vector{io::as_tensor_bytes<float>("t", {1}, tie)});
  CHECK(io::checkpoint(dir / "tie.safetensors").read<bf16>("t")[0] == bf16(1.0f));
  // Writing the same tensors again gives the same bytes.
  io::save_safetensors(dir / "again.safetensors", tensors, {{"format", "pt"}});
  CHECK(test::read_file(dir / "again.safetensors") == bytes);
}

TEST_CASE("the writer refuses bad tensors before writing anything") {
  test::temp_dir dir;
  const std::vector<float> f(6, 1.0f);
  const fs::path file = dir / "bad.safetensors";
  const auto refuse = [&](std::vector<io::tensor_bytes> t, const char* message) {
    CHECK_THROWS_WITH_AS(io::save_safetensors(file, t), doctest::Contains(message), error);
    CHECK_FALSE(fs::exists(file));
    CHECK(fs::is_empty(dir.path));  // no temporary file left either
  };
  refuse({io::as_tensor_bytes<float>("w", {2, 4}, f)},
         "tensor 'w': 24 bytes given but shape [2, 4] of F32 needs 32 bytes");
  refuse({io::as_tensor_bytes<float>("w", {6}, f), io::as_tensor_bytes<float>("w", {6}, f)},
         "tensor 'w' is given twice");
  refuse({io::as_tensor_bytes<float>("__metadata__", {6}, f)}, "'__metadata__' is reserved");
  // A shape whose element count or byte count leaves 64 bits is a sentence, not a wrapped size.
  refuse({io::as_tensor_bytes<float>("huge", {index_t{1} << 62, 4}, f)},
         "huge: the shape [4611686018427387904, 4] holds more than 2^63 elements");
  refuse({io::as_tensor_bytes<float>("wide", {index_t{1} << 61, 2}, f)},
         "wide: 4611686018427387904 × 4 overflows 64 bits");
}

TEST_CASE("a write that fails half-way leaves neither a partial file nor a temporary one") {
  test::temp_dir dir;
  const fs::path file = dir / "model.safetensors";
  const std::vector<float> small(4, 1.0f), big(1 << 16, 2.0f);
  io::save_safetensors(file, std::vector{io::as_tensor_bytes<float>("w", {4}, small)});
  const std::string before = test::read_file(file);

  // Cap the size of files this process may write below the new file's size: write() fails
  // with EFBIG part-way through (SIGXFSZ ignored so that it is an error, not a signal).
  ::rlimit old{};
  REQUIRE(::getrlimit(RLIMIT_FSIZE, &old) == 0);
  const auto old_handler = ::signal(SIGXFSZ, SIG_IGN);
  ::rlimit capped = old;
  capped.rlim_cur = 4096;
  REQUIRE(::setrlimit(RLIMIT_FSIZE, &capped) == 0);
  std::string message = "no error";
  try {
    io::save_safetensors(file, std::vector{io::as_tensor_bytes<float>("w", {1 << 16}, big)});
  } catch (const error& e) {
    message = e.what();
  }
  ::setrlimit(RLIMIT_FSIZE, &old);
  ::signal(SIGXFSZ, old_handler);

  CHECK(message.find("cannot write the file") != std::string::npos);
  CHECK(message.find(file.string()) != std::string::npos);
  CHECK(test::read_file(file) == before);  // the old file is untouched
  std::size_t entries = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator(dir.path)) ++entries;
  CHECK(entries == 1);  // the temporary file is gone
}

TEST_CASE("every kind of bad file is an error naming the file and the tensor") {
  test::temp_dir dir;
  struct bad_case {
    const char* what;
    std::string bytes;
    std::vector<const char*> message;  // every part must appear
  };
  const std::string f32x2(8, '\0');
  const auto entry = [](const char* dtype, const char* shape, const char* offsets) {
    return fmt::format(R"({{"dtype": "{}", "shape": {}, "data_offsets": {}}})", dtype, shape,
                       offsets);
  };
  const std::string ok = entry("F32", "[2]", "[0, 8]");
  using test::safetensors_bytes;
  std::string huge_length = safetensors_bytes("{}", "");
  huge_length[5] = '\x7F';
  const std::vector<bad_case> cases{
      {"empty file", "", {"truncated: 0 bytes"}},
      {"truncated length", std::string("\x10\0\0", 3), {"truncated: 3 bytes"}},
      {"header length past the end",
       safetensors_bytes(R"({"w": )" + ok + "}", f32x2).substr(0, 30),
       {"the header length", "runs past the end of the file"}},
      {"enormous header length", huge_length, {"runs past the end of the file"}},
      {"invalid JSON", safetensors_bytes(R"({"w": {"dtype": )", ""), {"is not valid JSON"}},
      {"header not an object",
       safetensors_bytes("[1, 2]", ""),
       {"the header is not a JSON object"}},
      {"unknown dtype",
       safetensors_bytes(R"({"w": )" + entry("F42", "[2]", "[0, 8]") + "}", f32x2),
       {"tensor 'w'", "unknown dtype \"F42\"", "BF16"}},
      {"offsets past the data",
       safetensors_bytes(R"({"w": )" + entry("F32", "[4]", "[0, 16]") + "}", f32x2),
       {"tensor 'w'", "data_offsets [0, 16]", "data section of 8 bytes"}},
      {"data section truncated",
       safetensors_bytes(R"({"w": )" + entry("F32", "[2]", "[0, 8]") + "}", std::string(4, '\0')),
       {"tensor 'w'", "data section of 4 bytes"}},
      {"begin after end",
       safetensors_bytes(R"({"w": )" + entry("F32", "[0]", "[8, 0]") + "}", f32x2),
       {"tensor 'w'", "data_offsets [8, 0]"}},
      {"overlapping tensors",
       safetensors_bytes(R"({"a": )" + entry("F32", "[2]", "[0, 8]") + R"(, "b": )" +
                             entry("F32", "[1]", "[4, 8]") + "}",
                         f32x2),
       {"tensor 'b'", "overlap those of tensor 'a'"}},
      {"shape and bytes disagree",
       safetensors_bytes(R"({"w": )" + entry("BF16", "[3]", "[0, 8]") + "}", f32x2),
       {"tensor 'w'", "hold 8 bytes but shape [3] of BF16 needs 6 bytes"}},
      {"shape overflows",
       safetensors_bytes(R"({"w": )" + entry("F32", "[4294967296, 4294967296]", "[0, 8]") + "}",
                         f32x2),
       {"tensor 'w'", "overflows"}},
      {"negative dim",
       safetensors_bytes(R"({"w": )" + entry("F32", "[-2]", "[0, 8]") + "}", f32x2),
       {"tensor 'w'", "non-negative integer"}},
      {"fractional dim",
       safetensors_bytes(R"({"w": )" + entry("F32", "[2.5]", "[0, 8]") + "}", f32x2),
       {"tensor 'w'", "non-negative integer"}},
      {"one offset",
       safetensors_bytes(R"({"w": )" + entry("F32", "[2]", "[8]") + "}", f32x2),
       {"tensor 'w'", "two non-negative integers"}},
      {"no dtype",
       safetensors_bytes(R"({"w": {"shape": [2], "data_offsets": [0, 8]}})", f32x2),
       {"tensor 'w'", "no \"dtype\""}},
      {"entry not an object",
       safetensors_bytes(R"({"w": 3})", f32x2),
       {"tensor 'w'", "not an object"}},
      {"duplicate names",
       safetensors_bytes(R"({"w": )" + ok + R"(, "w": )" + ok + "}", f32x2),
       {"names 'w' twice"}},
      {"metadata not strings",
       safetensors_bytes(R"({"__metadata__": {"n": 3}, "w": )" + ok + "}", f32x2),
       {"\"__metadata__\" entry 'n' is not a string"}},
  };
  for (const bad_case& c : cases) {
    const std::string what = c.what;
    CAPTURE(what);
    const fs::path file = dir / (std::string(c.what) + ".safetensors");
    test::write_file(file, c.bytes);
    const std::string message = open_error(file);
    CAPTURE(message);
    CHECK(message.find(file.string()) != std::string::npos);
    for (const char* part : c.message) CHECK(message.find(part) != std::string::npos);
  }
}

TEST_CASE("bad index sets are errors naming the index, the tensor and the file") {
  test::temp_dir dir;
  io::save_safetensors(dir / "a.safetensors",
                       std::vector{io::as_tensor_bytes<float>("x", {1}, std::vector{1.0f})});
  const auto index = [&](const std::string& name, const std::string& text) {
    const fs::path p = dir / name;
    test::write_file(p, text);
    return open_error(p);
  };
  const auto contains = [](const std::string& message, std::vector<const char*> parts) {
    CAPTURE(message);
    for (const char* part : parts) CHECK(message.find(part) != std::string::npos);
  };
  contains(index("broken.index.json", R"({"weight_map": {"x": )"),
           {"broken.index.json", "is not valid JSON"});
  contains(index("no_map.index.json", R"({"metadata": {}})"), {"no_map.index.json", "weight_map"});
  contains(index("missing_tensor.index.json",
                 R"({"weight_map": {"x": "a.safetensors", "y": "a.safetensors"}})"),
           {"missing_tensor.index.json", "tensor 'y'", "a.safetensors", "holds no tensor"});
  contains(index("missing_file.index.json", R"({"weight_map": {"z": "b.safetensors"}})"),
           {"missing_file.index.json", "tensor 'z'", "b.safetensors", "cannot be opened"});
  contains(index("escape.index.json", R"({"weight_map": {"x": "../a.safetensors"}})"),
           {"escape.index.json", "tensor 'x'", "not a file beside the index"});
  contains(
      index("dup.index.json", R"({"weight_map": {"x": "a.safetensors", "x": "a.safetensors"}})"),
      {"dup.index.json", "names 'x' twice"});
  contains(index("good.index.json", R"({"weight_map": {"x": "a.safetensors"}})"), {"no error"});
  contains(open_error(dir / "nothing_here"), {"nothing_here", "no such file"});
}

TEST_CASE("reads outside the tensor or into a wrong-sized buffer are errors, never reads") {
  test::temp_dir dir;
  const std::vector<float> w(12, 1.0f);
  io::save_safetensors(dir / "m.safetensors",
                       std::vector{io::as_tensor_bytes<float>("w", {3, 4}, w)});
  const io::checkpoint ck(dir / "m.safetensors");
  shard::selection beyond = shard::selection::all({3, 4});
  beyond.dims[1] = {{{2, 5}}};
  CHECK_THROWS_WITH_AS(ck.read<float>("w", beyond),
                       doctest::Contains("tensor 'w' dim 1: the selection takes [2, 5) of a dim of "
                                         "size 4"),
                       error);
  CHECK_THROWS_WITH_AS(ck.read<float>("w", shard::selection::all({12})),
                       doctest::Contains("tensor 'w' has 2 dims (shape [3, 4]) but the selection "
                                         "has 1"),
                       error);
  std::vector<float> small(5);
  CHECK_THROWS_WITH_AS(ck.read_into<float>("w", shard::selection::all({3, 4}), small),
                       doctest::Contains("needs 12 elements but the buffer holds 5"), error);
  CHECK(ck.bytes_read() == 0);
}

TEST_CASE("bf16 → f32 on read keeps every bit pattern, in whole vectors and in the tail") {
  test::temp_dir dir;
  std::vector<bf16> v;
  for (const std::uint16_t bits :
       {0x0000, 0x8000, 0x0001, 0x807F, 0x7F80, 0xFF80, 0x7FC1, 0xFFFF, 0x3F80, 0xC2F7, 0x0080,
        0x7F7F, 0x4049, 0x1234, 0xABCD, 0x5555, 0x2AAA, 0x0F0F, 0xF0F0})
    v.push_back(bf16::from_bits(bits));
  io::save_safetensors(dir / "b.safetensors", std::vector{io::as_tensor_bytes<bf16>("b", {19}, v)});
  const std::vector<float> got = io::checkpoint(dir / "b.safetensors").read<float>("b");
  REQUIRE(got.size() == v.size());
  for (std::size_t i = 0; i < v.size(); ++i)
    CHECK(std::bit_cast<std::uint32_t>(got[i]) == std::uint32_t{v[i].bits} << 16);
}

TEST_CASE("the temporary files of a writer that was killed are removed by the next write") {
  test::temp_dir dir;
  const fs::path file = dir / "model.safetensors";
  const std::string host = io::detail::host_name();
  // A process that has exited (and been reaped): its pid names no process.
  const pid_t dead = ::fork();
  REQUIRE(dead >= 0);
  if (dead == 0) ::_exit(0);
  REQUIRE(::waitpid(dead, nullptr, 0) == dead);
  const fs::path stale =
                     dir / (io::detail::temp_prefix("model.safetensors", host, dead) + "a1B2c3"),
                 live = dir / (io::detail::temp_prefix("model.safetensors", host, ::getppid()) +
                               "d4E5f6"),  // a writer still running (our parent)
      other_host = dir / (io::detail::temp_prefix("model.safetensors", "elsewhere", dead) + "x"),
                 other_file =
                     dir / (io::detail::temp_prefix("other.safetensors", host, dead) + "y");
  for (const fs::path& p : {stale, live, other_host, other_file}) test::write_file(p, "partial");
  const std::vector<float> w(4, 1.0f);
  io::save_safetensors(file, std::vector{io::as_tensor_bytes<float>("w", {4}, w)});
  CHECK(fs::exists(file));
  CHECK_FALSE(fs::exists(stale));
  CHECK(fs::exists(live));
  CHECK(fs::exists(other_host));  // another machine's writer may still run (shared disks)
  CHECK(fs::exists(other_file));  // another target's: its own next write cleans it
}
