// tpx-run: run a causal LM from its model directory, sharded over ranks — threads of this process,
// or processes under an MPI launcher (mpirun -np N tpx-run …) — each rank reading only its own
// bytes of the checkpoint.
//
//   tpx-run MODEL_DIR [--tp N] [--backend threads|mpi] [--sp] [--ep N] [--plan F] [--ds-config F]
//           [--dtype f64|f32|bf16] (--ids 1,2,3 | --ids-file F | --prompts F | --prompt TEXT … |
//           --prompts-file F) [--targets 4,5,6]
//           [--logits-out FILE] [--compare FILE] [--generate N] [--temperature X] [--top-k K]
//           [--top-p P] [--seed S] [--json]
//
// The plan (DeepSpeed config > --plan > config.json's plan sections > the preset) is resolved over
// the checkpoint's tensors and must place every tensor where the model's layers hold it. Prints
// what it loaded, the bytes each rank read and holds, the bytes each collective moved and the
// time; `--json` prints one object instead. Exit 0 on success, 2 with one sentence on stderr for
// bad input.

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/core.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "cli.hpp"
#include "tpx/backend/host/backend.hpp"
#include "tpx/core/json.hpp"
#include "tpx/io/writer.hpp"
#include "tpx/model/causal_lm.hpp"
#include "tpx/model/generate.hpp"
#include "tpx/model/plan.hpp"
#include "tpx/text/tokenizer.hpp"
#if TPX_HAVE_MPI
#include "tpx/backend/mpi/backend.hpp"
#endif

using namespace tpx;
namespace fs = std::filesystem;

namespace {

constexpr const char* usage =
    "usage: tpx-run MODEL_DIR [--tp N] [--backend threads|mpi] [--sp] [--ep N] [--plan F]\n"
    "               [--ds-config F]\n"
    "               [--dtype f64|f32|bf16] (--ids 1,2,3 | --ids-file F | --prompts F |\n"
    "               --prompt TEXT … | --prompts-file F)\n"
    "               [--targets 4,5,6] [--logits-out FILE] [--compare FILE] [--generate N]\n"
    "               [--temperature X] [--top-k K] [--top-p P] [--seed S] [--json]\n"
    "               [--progress]\n"
    "Runs the causal LM in MODEL_DIR (config.json + model.safetensors or an index set) on tp\n"
    "ranks, each reading only its shard of the checkpoint, and prints what it loaded, the\n"
    "bytes each collective moved and the time.\n"
    "  --tp N          ranks (default: the DeepSpeed config's autotp_size, else 1; under MPI the\n"
    "                  number of processes, which --tp must equal when given)\n"
    "  --backend B     threads: tp threads of this process; mpi: one rank per process of an MPI\n"
    "                  job (mpirun -np N tpx-run …), printing once, from rank 0 (default: mpi\n"
    "                  when started by an MPI launcher, else threads)\n"
    "  --sp            sequence parallelism (norms and residuals on token shards)\n"
    "  --ep N          expert parallelism: 1 or tp (whole experts per rank)\n"
    "  --plan F        a Hugging Face plan JSON (default: config.json's plan sections, else the\n"
    "                  preset of its model_type)\n"
    "  --ds-config F   a DeepSpeed config with tensor_parallel.partition_config\n"
    "  --dtype T       f64, f32 (default) or bf16 (weights held as bf16, f32 compute)\n"
    "  --ids L         the prompt's token ids, comma-separated; --ids-file F: a JSON list or\n"
    "                  whitespace/comma-separated ids\n"
    "  --targets L     next-token targets (as many as ids; -100 skips one): prints the loss\n"
    "  --logits-out F  writes the logits [T, vocab] as the safetensors tensor 'logits'\n"
    "  --compare F     prints the largest difference from the tensor 'logits' [T, vocab] of the\n"
    "                  safetensors file F (another run's --logits-out, or transformers' logits)\n"
    "  --generate N    up to N new tokens (ending at the config's end-of-sequence id): a\n"
    "                  prefill of the prompt into a KV cache of each rank's KV heads, then one\n"
    "                  cached decode step per token; greedy unless --temperature > 0\n"
    "  --prompts F     a JSON list of id lists generated as one batch (with --generate; no --ids)\n"
    "  --prompt TEXT   the prompt as text, encoded with MODEL_DIR's tokenizer.json (the special\n"
    "                  tokens its template adds included); repeated: a batch. With --generate\n"
    "                  and one prompt the new tokens are printed as text as they come\n"
    "  --prompts-file F  a JSON list of prompts as text, generated as one batch\n"
    "  --temperature X, --top-k K, --top-p P, --seed S\n"
    "                  sampling (temperature 0: greedy; top-k 0: every id; top-p 1: no cut)\n"
    "  --json          one JSON object on stdout\n"
    "  --progress      a progress line on stderr while the ranks load (bytes read of what the\n"
    "                  plan gives them; shown anyway when stderr is a terminal)\n"
    "  --version       prints the program's and tpx's version\n"
    "Exit 0 on success, 2 on bad input.\n";

struct options {
  std::string dir, plan, ds, dtype = "f32", logits_out, compare, backend;
  std::vector<std::string> texts;  ///< --prompt / --prompts-file: prompts as text
  /// The model directory's tokenizer.json, read when the prompts are text.
  std::shared_ptr<const text::tokenizer> tokenizer;
  std::optional<int> tp;
  int ep = 1;
  bool sp = false, json = false, progress = false;
  std::vector<std::int64_t> ids, targets;
  std::vector<std::vector<std::int64_t>> prompts;  ///< --prompts: a batch to generate from
  bool have_ids = false, have_targets = false, have_prompts = false;
  index_t generate = 0;
  model::sampling sample;
};

int small_number(std::string_view flag, std::string_view text) {
  return static_cast<int>(cli::whole_number(flag, text, 0, 1 << 20));
}

/// "1,2,3" (or whitespace-separated) → ids.
std::vector<std::int64_t> id_list(std::string_view flag, std::string_view text) {
  // Ids separated by one comma (with spaces around it or not) or by spaces alone; an empty entry
  // (a leading, trailing or doubled comma) is an error, not skipped.
  std::vector<std::int64_t> out;
  const auto space = [&](std::size_t k) {
    return k < text.size() && std::isspace(static_cast<unsigned char>(text[k]));
  };
  const auto empty_entry = [&] {
    fail("{} '{}': entry {} is empty (ids are whole numbers separated by commas or spaces)", flag,
         text, out.size() + 1);
  };
  std::size_t i = 0;
  while (space(i)) ++i;
  while (i < text.size()) {
    if (text[i] == ',') empty_entry();
    std::size_t j = i;
    while (j < text.size() && text[j] != ',' && !space(j)) ++j;
    out.push_back(cli::whole_number(flag, text.substr(i, j - i), INT64_MIN, INT64_MAX));
    while (space(j)) ++j;
    if (j < text.size() && text[j] == ',') {
      ++j;
      while (space(j)) ++j;
      if (j == text.size() || text[j] == ',') empty_entry();
    }
    i = j;
  }
  return out;
}

/// --prompts-file FILE: a JSON list of prompts as text.
std::vector<std::string> texts_from_file(const std::string& path) {
  std::error_code ec;
  expect(fs::is_regular_file(path, ec), "--prompts-file '{}': no such file", path);
  const nlohmann::json j = io::read_json_file(path, "--prompts-file");
  expect(j.is_array() && !j.empty(), "--prompts-file '{}' must hold a non-empty JSON list of texts",
         path);
  std::vector<std::string> out;
  for (std::size_t p = 0; p < j.size(); ++p) {
    expect(j[p].is_string(), "--prompts-file '{}': prompt {} is {}, not a string", path, p,
           json_excerpt(j[p]));
    out.push_back(j[p].get<std::string>());
  }
  return out;
}

/// Text prompts into ids with the model directory's tokenizer.json (the special tokens its
/// template adds included): one prompt as --ids, several as a --prompts batch.
void tokenize_prompts(options& o) {
  std::error_code ec;
  const fs::path file = fs::path(o.dir) / "tokenizer.json";
  expect(fs::is_regular_file(file, ec),
         "{}: --prompt needs the model directory's tokenizer.json, which it does not have; give "
         "the prompt's token ids with --ids instead",
         o.dir);
  o.tokenizer = std::make_shared<const text::tokenizer>(text::tokenizer::from_file(file));
  std::vector<std::vector<std::int64_t>> ids;
  for (std::size_t p = 0; p < o.texts.size(); ++p) {
    ids.push_back(o.tokenizer->encode(o.texts[p]));
    expect(!ids.back().empty(), "prompt {} ('{}') has no tokens", p, o.texts[p]);
  }
  if (ids.size() == 1) {
    o.ids = std::move(ids[0]);
    o.have_ids = true;
  } else {
    o.prompts = std::move(ids);
    o.have_prompts = true;
  }
}

/// Prints one sequence's new tokens as text while they come (rank 0 of a run with a single text
/// prompt): the decoded text so far, less what is printed, once it does not end inside a
/// character; special tokens left out.
class text_stream {
 public:
  explicit text_stream(const text::tokenizer& t) : t_(&t) {}
  void add(std::int64_t id) {
    ids_.push_back(id);
    const std::string all = t_->decode(ids_, true);
    if (all.size() < printed_ || all.ends_with("\xEF\xBF\xBD")) return;  // a character goes on
    std::fwrite(all.data() + printed_, 1, all.size() - printed_, stdout);
    std::fflush(stdout);
    printed_ = all.size();
  }
  void end() {
    const std::string all = t_->decode(ids_, true);
    if (all.size() > printed_) std::fwrite(all.data() + printed_, 1, all.size() - printed_, stdout);
    std::fputc('\n', stdout);
    std::fflush(stdout);
  }

 private:
  const text::tokenizer* t_;
  std::vector<std::int64_t> ids_;
  std::size_t printed_ = 0;
};

/// --prompts FILE: a JSON list of token-id lists.
std::vector<std::vector<std::int64_t>> prompts_from_file(const std::string& path) {
  std::error_code ec;
  expect(fs::is_regular_file(path, ec), "--prompts '{}': no such file", path);
  const nlohmann::json j = io::read_json_file(path, "--prompts");
  expect(j.is_array() && !j.empty(), "--prompts '{}' must hold a non-empty JSON list of id lists",
         path);
  std::vector<std::vector<std::int64_t>> out;
  for (std::size_t p = 0; p < j.size(); ++p) {
    expect(j[p].is_array(), "--prompts '{}': prompt {} is {}, not a list of ids", path, p,
           json_excerpt(j[p]));
    expect(!j[p].empty(), "--prompts '{}': prompt {} is empty", path, p);
    out.emplace_back();
    for (const nlohmann::json& v : j[p]) {
      expect(v.is_number_integer(), "--prompts '{}': prompt {} holds {}, not a whole number", path,
             p, json_excerpt(v));
      out.back().push_back(v.get<std::int64_t>());
    }
  }
  return out;
}

std::vector<std::int64_t> ids_from_file(const std::string& path) {
  const std::string s = io::read_text_file(path, "--ids-file");  // a regular file, bounded
  if (s.find('[') != std::string::npos) {
    const nlohmann::json j = parse_json(s, "--ids-file " + path);
    expect(j.is_array(), "--ids-file '{}' must hold a JSON list of token ids", path);
    std::vector<std::int64_t> out;
    for (const nlohmann::json& v : j) {
      expect(v.is_number_integer(), "--ids-file '{}': every id must be a whole number, got {}",
             path, json_excerpt(v));
      out.push_back(v.get<std::int64_t>());
    }
    return out;
  }
  return id_list("--ids-file " + path, s);
}

options parse_args(int argc, char** argv) {
  options o;
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    const auto value = [&]() -> std::string_view {
      expect(i + 1 < argc, "{} needs a value", a);
      return argv[++i];
    };
    if (a == "--tp")
      o.tp = static_cast<int>(cli::whole_number(a, value(), 1, max_ranks));
    else if (a == "--ep")
      o.ep = static_cast<int>(cli::whole_number(a, value(), 1, max_ranks));
    else if (a == "--sp")
      o.sp = true;
    else if (a == "--backend") {
      o.backend = value();
      expect(o.backend == "threads" || o.backend == "mpi",
             "--backend must be threads or mpi, got '{}'", o.backend);
    } else if (a == "--plan")
      o.plan = value();
    else if (a == "--ds-config")
      o.ds = value();
    else if (a == "--dtype")
      o.dtype = value();
    else if (a == "--ids") {
      o.ids = id_list(a, value());
      o.have_ids = true;
    } else if (a == "--ids-file") {
      o.ids = ids_from_file(std::string(value()));
      o.have_ids = true;
    } else if (a == "--targets") {
      o.targets = id_list(a, value());
      o.have_targets = true;
    } else if (a == "--logits-out")
      o.logits_out = value();
    else if (a == "--compare")
      o.compare = value();
    else if (a == "--generate")
      o.generate = small_number(a, value());
    else if (a == "--prompts") {
      o.prompts = prompts_from_file(std::string(value()));
      o.have_prompts = true;
    } else if (a == "--prompt")
      o.texts.emplace_back(value());
    else if (a == "--prompts-file")
      o.texts = texts_from_file(std::string(value()));
    else if (a == "--temperature")
      o.sample.temperature = cli::real_number(a, value());
    else if (a == "--top-k")
      o.sample.top_k = cli::whole_number(a, value(), 0, INT32_MAX);
    else if (a == "--top-p")
      o.sample.top_p = cli::real_number(a, value());
    else if (a == "--seed")
      o.sample.seed = static_cast<std::uint64_t>(cli::whole_number(a, value(), 0, INT64_MAX));
    else if (a == "--json")
      o.json = true;
    else if (a == "--progress")
      o.progress = true;
    else if (a.starts_with("-"))
      fail("unknown argument '{}'; run tpx-run --help", a);
    else {
      expect(o.dir.empty(), "one model directory only: got '{}' and '{}'", o.dir, a);
      o.dir = a;
    }
  }
  expect(!o.dir.empty(), "MODEL_DIR is required; run tpx-run --help");
  if (!o.texts.empty()) {
    expect(!o.have_ids && !o.have_prompts,
           "--prompt / --prompts-file give the prompts as text; they take no --ids, --ids-file "
           "or --prompts");
    tokenize_prompts(o);
  }
  if (o.have_prompts) {
    expect(!o.have_ids && !o.have_targets && o.logits_out.empty() && o.compare.empty(),
           "--prompts generates from a batch; it takes no --ids, --ids-file, --targets, "
           "--logits-out or --compare");
    expect(o.generate >= 1, "--prompts needs --generate N with N ≥ 1");
  } else {
    expect(o.have_ids,
           "give the prompt with --prompt TEXT, --ids 1,2,3 or --ids-file F (or a batch with "
           "--prompts F or --prompts-file F)");
    expect(!o.ids.empty(), "the prompt has no token ids");
  }
  model::expect_valid(o.sample);
  expect(o.dtype == "f64" || o.dtype == "f32" || o.dtype == "bf16",
         "--dtype must be f64, f32 or bf16, got '{}'", o.dtype);
  expect(!o.have_targets || o.targets.size() == o.ids.size(),
         "--targets has {} ids but the prompt has {}; give one target per token (-100 to skip)",
         o.targets.size(), o.ids.size());
  return o;
}

/// What one rank reports.
struct rank_report {
  std::uint64_t read = 0, expected = 0, held = 0;
  std::uint64_t cache = 0;  ///< the KV cache of `--generate` (this rank's KV heads)
  comm::stats traffic;
};

/// The line on stderr while the ranks read their shards: the bytes each rank of this process has
/// read against what the plan gives it, printed by rank 0's thread at most ten times a second,
/// and once more when every rank has loaded. Each rank writes only its own counter.
class load_progress {
 public:
  /// Shows the line for `ranks` (this process's: every rank on threads, one under MPI) of a plan.
  void start(const plan::resolution& plan, std::vector<int> ranks) {
    on_ = true;
    ranks_ = std::move(ranks);
    total_.assign(plan.param_bytes.begin(), plan.param_bytes.end());
    read_ = std::make_unique<std::atomic<std::uint64_t>[]>(total_.size());
    t0_ = last_ = std::chrono::steady_clock::now();
  }
  bool on() const noexcept { return on_; }
  /// Rank `rank` has read `bytes`; rank 0 prints when the last line is 0.1 s old.
  void update(int rank, std::uint64_t bytes) {
    read_[static_cast<std::size_t>(rank)].store(bytes, std::memory_order_relaxed);
    if (rank != 0) return;
    const auto now = std::chrono::steady_clock::now();
    if (now - last_ < std::chrono::milliseconds(100)) return;
    last_ = now;
    print(false);
  }
  /// The last line, once every rank has loaded (rank 0).
  void finish() { print(true); }

 private:
  void print(bool last) const {
    std::uint64_t got = 0, want = 0;
    std::string per;
    const auto percent = [](std::uint64_t a, std::uint64_t b) {
      return b == 0 ? 100.0 : 100.0 * static_cast<double>(a) / static_cast<double>(b);
    };
    for (const int r : ranks_) {
      const std::uint64_t g = read_[static_cast<std::size_t>(r)].load(std::memory_order_relaxed);
      got += g;
      want += total_[static_cast<std::size_t>(r)];
      per += fmt::format(" {:.0f}%", percent(g, total_[static_cast<std::size_t>(r)]));
    }
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
    std::string line =
        last ? fmt::format("tpx-run: loaded {} in {:.2f} s{}", cli::human(static_cast<double>(got)),
                           s, ranks_.size() > 1 ? fmt::format(" by {} ranks", ranks_.size()) : "")
             : fmt::format("tpx-run: loading {} of {} ({:.0f}%){}",
                           cli::human(static_cast<double>(got)),
                           cli::human(static_cast<double>(want)), percent(got, want),
                           ranks_.size() > 1 && ranks_.size() <= 8 ? " — ranks" + per : "");
    const std::size_t shown = line.size();
    line.resize(std::max(shown, width_), ' ');  // over the longer line before it
    width_ = shown;
    fmt::print(stderr, "\r{}{}", line, last ? "\n" : "");
    std::fflush(stderr);
  }

  bool on_ = false;
  std::vector<int> ranks_;
  std::vector<index_t> total_;
  std::unique_ptr<std::atomic<std::uint64_t>[]> read_;
  std::chrono::steady_clock::time_point t0_, last_;
  mutable std::size_t width_ = 0;  ///< of the line last printed
};

struct result {
  load_progress progress;
  std::vector<rank_report> ranks;
  std::vector<double> logits;  // [T, V]
  std::optional<double> loss;
  std::vector<std::vector<std::int64_t>> generated;  // per prompt
  double load_s = 0, forward_s = 0, generate_s = 0;
};

/// One rank's part of the run: loads its shards, runs the forward (and generation) and fills its
/// own report; rank 0 fills the logits, loss, generated ids and times.
template <layer::block_mode Mode, class Backend, class T>
void run_rank(const options& o, const model::config& c, const io::checkpoint& ck,
              const plan::resolution& plan, typename Backend::communicator& comm, result& out) {
  const std::size_t r = static_cast<std::size_t>(comm.rank());
  typename Backend::engine engine;
  const auto t0 = std::chrono::steady_clock::now();
  model::options mo{.ep = o.ep};
  if (out.progress.on())
    mo.on_read = [&out, rank = comm.rank()](std::uint64_t bytes) {
      out.progress.update(rank, bytes);
    };
  model::causal_lm<Mode, Backend, T> lm(engine, comm, c, ck, mo);
  comm.barrier();  // every rank has loaded (the traffic counted below starts after it)
  if (out.progress.on() && comm.rank() == 0) out.progress.finish();
  const auto t1 = std::chrono::steady_clock::now();
  const auto held = lm.checkpoint_placements(ck);
  if (comm.rank() == 0) model::expect_matches(plan, held);
  rank_report& rep = out.ranks[r];
  rep.read = lm.bytes_read();
  rep.held = lm.bytes_held();
  for (const auto& [name, p] : held)
    rep.expected +=
        static_cast<std::uint64_t>(p.of(comm.rank()).size()) * io::size_of(ck.info(name).dtype);
  comm.reset_statistics();
  std::vector<T> logits;
  std::optional<double> loss;
  if (!o.have_prompts) {
    lm.forward(o.ids);
    logits = lm.gather_logits();
    if (o.have_targets) loss = static_cast<double>(lm.loss(o.targets));
  }
  const auto t2 = std::chrono::steady_clock::now();
  rep.traffic = comm.statistics();
  std::vector<std::vector<std::int64_t>> generated;
  if (o.generate > 0) {
    index_t cache = 0;
    std::optional<text_stream> stream;
    if (o.tokenizer && !o.have_prompts && !o.json && comm.rank() == 0) stream.emplace(*o.tokenizer);
    generated = model::generate(
        lm, o.have_prompts ? o.prompts : std::vector<std::vector<std::int64_t>>{o.ids},
        {.max_new_tokens = o.generate,
         .eos = c.eos_token_ids,
         .sample = o.sample,
         .on_token =
             [&](index_t, std::int64_t id) {
               if (stream) stream->add(id);
             }},
        &cache);
    if (stream) stream->end();
    rep.cache = static_cast<std::uint64_t>(cache);
  }
  const auto t3 = std::chrono::steady_clock::now();
  if (comm.rank() != 0) return;
  out.logits.assign(logits.begin(), logits.end());
  out.loss = loss;
  out.generated = std::move(generated);
  const auto s = [](auto a, auto b) { return std::chrono::duration<double>(b - a).count(); };
  out.load_s = s(t0, t1);
  out.forward_s = s(t1, t2);
  out.generate_s = s(t2, t3);
}

/// Every rank's report on every rank: a process holds only its own until they are gathered.
template <class Comm>
void share_reports(Comm& comm, std::vector<rank_report>& ranks) {
  constexpr std::size_t fields = 4 + 2 * comm::kind_count;
  const rank_report& mine = ranks[static_cast<std::size_t>(comm.rank())];
  std::vector<std::int64_t> send{
      static_cast<std::int64_t>(mine.read), static_cast<std::int64_t>(mine.expected),
      static_cast<std::int64_t>(mine.held), static_cast<std::int64_t>(mine.cache)};
  for (const comm::counter& k : mine.traffic.by_kind) {
    send.push_back(k.calls);
    send.push_back(k.bytes);
  }
  std::vector<std::int64_t> all(fields * ranks.size());
  comm.all_gather(std::span<const std::int64_t>(send), std::span<std::int64_t>(all),
                  std::vector<index_t>(ranks.size(), static_cast<index_t>(fields)));
  for (std::size_t q = 0; q < ranks.size(); ++q) {
    const std::int64_t* f = all.data() + q * fields;
    rank_report& rep = ranks[q];
    rep = {static_cast<std::uint64_t>(f[0]),
           static_cast<std::uint64_t>(f[1]),
           static_cast<std::uint64_t>(f[2]),
           static_cast<std::uint64_t>(f[3]),
           {}};
    for (int k = 0; k < comm::kind_count; ++k)
      rep.traffic.by_kind[static_cast<std::size_t>(k)] = {f[4 + 2 * k], f[5 + 2 * k]};
  }
}

void write_logits(const std::string& path, const std::string& dtype, const std::vector<double>& v,
                  index_t tokens, index_t vocab) {
  const std::vector<index_t> shape{tokens, vocab};
  const auto save = [&]<class T>(std::type_identity<T>) {
    std::vector<T> data;
    data.reserve(v.size());
    for (const double x : v) data.push_back(static_cast<T>(x));
    const io::tensor_bytes t = io::as_tensor_bytes<T>("logits", shape, data);
    io::save_safetensors(path, std::span(&t, 1));
  };
  if (dtype == "f64")
    save(std::type_identity<double>{});
  else  // f32, and bf16 weights (computing in f32)
    save(std::type_identity<float>{});
}

std::string traffic_text(const comm::stats& s) {
  std::string out;
  for (int k = 0; k < comm::kind_count; ++k) {
    const comm::counter& c = s.by_kind[static_cast<std::size_t>(k)];
    if (c.calls == 0 || static_cast<comm::kind>(k) == comm::kind::barrier) continue;
    out +=
        fmt::format("{}{} ×{} {}", out.empty() ? "" : ", ", comm::name(static_cast<comm::kind>(k)),
                    c.calls, cli::human(static_cast<double>(c.bytes)));
  }
  return out.empty() ? "none" : out;
}

/// What every rank reads and decides before the model runs: no collective in it.
struct setup {
  std::optional<model::plan_inputs> inputs;
  std::optional<model::config> config;
  std::optional<io::checkpoint> checkpoint;
  std::optional<plan::resolution> plan;
  int tp = 1;
};

/// Reads the config, the checkpoint's header and the plan, and checks the prompt against them.
/// `processes`: the size of the MPI job, which is tp (cli::expect_one_rank_per_process checked
/// --tp against it); empty for thread ranks.
setup prepare(const options& o, std::optional<int> processes) {
  setup out;
  std::error_code ec;
  expect(fs::is_directory(o.dir, ec), "{}: no such model directory", o.dir);
  const fs::path config_path = fs::path(o.dir) / "config.json";
  const model::plan_inputs& inputs = out.inputs.emplace(io::read_json_file(config_path, "config"),
                                                        config_path.string(), o.plan, o.ds);
  const model::config& c = out.config.emplace([&] {
    model::config parsed = model::parse_config(inputs.json(), config_path.string());
    model::apply_generation_config(parsed, o.dir);  // the end-of-sequence ids generate stops at
    return parsed;
  }());
  const int tp = out.tp = inputs.tp(processes ? processes : o.tp);
  expect(o.ep == 1 || o.ep == tp, "--ep {} must be 1 or --tp ({})", o.ep, tp);
  const io::checkpoint& ck = out.checkpoint.emplace(o.dir);
  for (std::size_t t = 0; t < o.ids.size(); ++t)
    expect(o.ids[t] >= 0 && o.ids[t] < c.dims.vocab_size,
           "token {} of the prompt has id {}, outside the vocabulary [0, {})", t, o.ids[t],
           c.dims.vocab_size);
  if (o.have_prompts) model::expect_prompts(o.prompts, c.dims.vocab_size);  // before loading
  for (std::size_t t = 0; t < o.targets.size(); ++t)
    expect(o.targets[t] == -100 || (o.targets[t] >= 0 && o.targets[t] < c.dims.vocab_size),
           "target {} is {}, outside the vocabulary [0, {}) (and not -100)", t, o.targets[t],
           c.dims.vocab_size);
  const plan::resolution& plan =
      out.plan.emplace(inputs.resolve(inputs.tensors(ck), {.tp = tp, .sp = o.sp, .ep = o.ep}));
  plan.expect_usable();
  return out;
}

/// Runs every rank's part on `comm` (one rank of a group), in the mode and dtype asked for.
template <class Backend>
void run_ranks(const options& o, const setup& su, typename Backend::communicator& comm,
               result& out) {
  const auto go = [&]<layer::block_mode Mode>() {
    if (o.dtype == "f64")
      run_rank<Mode, Backend, double>(o, *su.config, *su.checkpoint, *su.plan, comm, out);
    else if (o.dtype == "bf16")  // weights held as bf16, computing in float
      run_rank<Mode, layer::weights_in<Backend, bf16>, float>(o, *su.config, *su.checkpoint,
                                                              *su.plan, comm, out);
    else
      run_rank<Mode, Backend, float>(o, *su.config, *su.checkpoint, *su.plan, comm, out);
  };
  if (o.sp)
    go.template operator()<layer::block_mode::sequence>();
  else
    go.template operator()<layer::block_mode::tensor>();
}

/// Prints the run's results (rank 0's view, every rank's report).
int report(const options& o, const setup& su, const result& r);

#if TPX_HAVE_MPI
/// One rank per process of the MPI job: every process reads the command line and the input and
/// checks them (the cause of a failure printed once, by rank 0, before any process ends), then
/// runs its rank; rank 0 prints. A rank that fails while the others wait ends every process.
int run_processes(int argc, char** argv) {
  mpi::environment env(argc, argv);
  mpi::communicator world = mpi::communicator::world();
  options o;
  setup su;
  if (const std::optional<int> status = cli::agreed_or_exit("tpx-run", world, [&] {
        o = parse_args(argc, argv);
        cli::expect_one_rank_per_process(o.backend, o.tp, world.size());
        o.backend = "mpi";
        su = prepare(o, world.size());
      }))
    return *status;
  result r;
  r.ranks.resize(static_cast<std::size_t>(su.tp));
  if (o.progress || ::isatty(STDERR_FILENO)) r.progress.start(*su.plan, {world.rank()});
  mpi::run(
      world,
      [&](mpi::communicator& comm) {
        run_ranks<mpi::backend>(o, su, comm, r);
        share_reports(comm, r.ranks);
        if (comm.rank() == 0) report(o, su, r);  // an error here also ends every process
        comm.barrier();
      },
      "tpx-run");
  return 0;
}
#endif

int run(int argc, char** argv) {
  for (int i = 1; i < argc; ++i)
    if (std::string_view(argv[i]) == "--help" || std::string_view(argv[i]) == "-h") {
      std::fputs(usage, stdout);
      return 0;
    }
#if TPX_HAVE_MPI
  // Under an MPI launcher (or asked for), every process is one rank of the job.
  if (cli::wants_processes(argc, argv)) return run_processes(argc, argv);
#endif
  options o = parse_args(argc, argv);
  expect(o.backend != "mpi",
         "--backend mpi: this tpx-run was built without MPI (configure with -Dmpi=enabled and "
         "an MPI installed, e.g. Debian's libopenmpi-dev)");
  const setup su = prepare(o, std::nullopt);
  result r;
  r.ranks.resize(static_cast<std::size_t>(su.tp));
  if (o.progress || ::isatty(STDERR_FILENO)) {
    std::vector<int> ranks(static_cast<std::size_t>(su.tp));
    for (int q = 0; q < su.tp; ++q) ranks[static_cast<std::size_t>(q)] = q;
    r.progress.start(*su.plan, std::move(ranks));
  }
  host::run(su.tp, [&](host::communicator& comm) { run_ranks<host::backend>(o, su, comm, r); });
  return report(o, su, r);
}

int report(const options& o, const setup& su, const result& r) {
  const model::config& c = *su.config;
  const plan::resolution& plan = *su.plan;
  const model::plan_inputs& inputs = *su.inputs;
  const int tp = su.tp;
  const index_t tokens = static_cast<index_t>(o.ids.size()), vocab = c.dims.vocab_size;
  if (!o.logits_out.empty()) write_logits(o.logits_out, o.dtype, r.logits, tokens, vocab);
  std::optional<std::pair<double, double>> diff;  // max |Δ|, and relative to max |reference|
  if (!o.compare.empty()) {
    const io::checkpoint ref(o.compare);
    const std::vector<index_t>& shape = ref.info("logits").shape;
    expect(shape == std::vector<index_t>{tokens, vocab},
           "--compare {}: its logits are {} but this run's are [{}, {}]", o.compare,
           shard::shape_string(shape), tokens, vocab);
    const std::vector<double> want = ref.read<double>("logits");
    double worst = 0, scale = 0;
    for (std::size_t i = 0; i < want.size(); ++i) {
      worst = std::max(worst, std::abs(r.logits[i] - want[i]));
      scale = std::max(scale, std::abs(want[i]));
    }
    diff = {worst, scale > 0 ? worst / scale : worst};
  }

  const std::string plan_note = inputs.has_hf_plan() || inputs.deepspeed()
                                    ? std::string(plan.decided_by)
                                    : plan.decided_by + " (config.json carries no plan sections)";
  if (o.json) {
    nlohmann::json j;
    j["model_type"] = c.dims.model_type;
    j["layers"] = c.layers();
    j["tp"] = tp;
    j["backend"] = o.backend;
    j["sp"] = o.sp;
    j["ep"] = o.ep;
    j["dtype"] = o.dtype;
    j["plan"] = plan.decided_by;
    if (!o.have_prompts) j["logits_shape"] = {tokens, vocab};
    if (r.loss) j["loss"] = *r.loss;
    // The new ids: one list per prompt of --prompts, a single list for --ids; with text prompts
    // their ids and the new tokens' text (special tokens left out) likewise.
    if (o.have_prompts)
      j["generated"] = r.generated;
    else if (o.generate > 0)
      j["generated"] = r.generated.at(0);
    if (o.tokenizer) {
      j["prompt_ids"] = o.have_prompts ? nlohmann::json(o.prompts) : nlohmann::json(o.ids);
      if (o.generate > 0) {
        nlohmann::json texts = nlohmann::json::array();
        for (const std::vector<std::int64_t>& g : r.generated)
          texts.push_back(o.tokenizer->decode(g, true));
        j["generated_text"] = o.have_prompts ? texts : texts.at(0);
      }
    }
    if (!o.logits_out.empty()) j["logits_out"] = o.logits_out;
    if (diff)
      j["compare"] = {
          {"file", o.compare}, {"max_abs", diff->first}, {"max_relative", diff->second}};
    nlohmann::json ranks = nlohmann::json::array();
    for (const rank_report& rep : r.ranks) {
      nlohmann::json x{{"bytes_read", rep.read}, {"bytes_held", rep.held}};
      if (o.generate > 0) x["cache_bytes"] = rep.cache;
      nlohmann::json coll = nlohmann::json::object();
      for (int k = 0; k < comm::kind_count; ++k) {
        const comm::counter& cn = rep.traffic.by_kind[static_cast<std::size_t>(k)];
        if (cn.calls > 0 && static_cast<comm::kind>(k) != comm::kind::barrier)
          coll[std::string(comm::name(static_cast<comm::kind>(k)))] = {{"calls", cn.calls},
                                                                       {"bytes", cn.bytes}};
      }
      x["forward_collectives"] = coll;
      ranks.push_back(x);
    }
    j["ranks"] = ranks;
    j["seconds"] = {{"load", r.load_s}, {"forward", r.forward_s}, {"generate", r.generate_s}};
    fmt::print("{}\n", j.dump());
    return 0;
  }
  fmt::print(
      "tpx-run: {} from {} ({} layers, hidden {}, {} / {} heads of {}, vocab {}{}), tp {} ({}), "
      "{}{}, {}\n",
      c.dims.model_type, o.dir, c.layers(), c.dims.hidden_size, c.dims.n_heads, c.dims.n_kv_heads,
      c.dims.head_dim, c.dims.vocab_size,
      c.is_moe() ? fmt::format(", {} experts top {}", c.dims.n_experts, c.dims.experts_per_token)
                 : "",
      tp, o.backend == "mpi" ? "MPI processes" : "threads",
      o.sp ? "tensor + sequence parallel" : "tensor parallel",
      o.ep > 1 ? fmt::format(", experts over ep {}", o.ep) : "", o.dtype);
  fmt::print("plan: {}; every tensor sits where it places it (embedding: vocab-parallel)\n",
             plan_note);
  for (std::size_t rank = 0; rank < r.ranks.size(); ++rank) {
    const rank_report& rep = r.ranks[rank];
    fmt::print("rank {}: read {} of the checkpoint ({}), holds {}; forward: {}\n", rank,
               cli::human(static_cast<double>(rep.read)),
               rep.read == rep.expected ? "exactly its shards" : "NOT its shards' bytes",
               cli::human(static_cast<double>(rep.held)), traffic_text(rep.traffic));
  }
  if (!o.have_prompts) {
    fmt::print(
        "time: load {:.1f} ms, forward of {} tokens (with the logits' all-gather) {:.1f} ms\n",
        r.load_s * 1e3, tokens, r.forward_s * 1e3);
    const double* last = r.logits.data() + (tokens - 1) * vocab;
    fmt::print("logits [{}, {}]; last position: arg max {} ({:.6f})\n", tokens, vocab,
               std::max_element(last, last + vocab) - last, *std::max_element(last, last + vocab));
  }
  if (r.loss) fmt::print("loss: {:.12f}\n", *r.loss);
  if (o.generate > 0) {
    std::string caches;
    for (const rank_report& rep : r.ranks)
      caches += (caches.empty() ? "" : " / ") + cli::human(static_cast<double>(rep.cache));
    const std::string how =
        o.sample.temperature == 0
            ? std::string("greedy")
            : fmt::format("sampled at temperature {}, top-k {}, top-p {}, seed {}",
                          o.sample.temperature, o.sample.top_k, o.sample.top_p, o.sample.seed);
    fmt::print(
        "generated (up to {} tokens per prompt, {}, ending at an end-of-sequence id {}: a "
        "prefill, then one cached decode step each; {:.1f} ms; KV cache per rank {}):\n",
        o.generate, how,
        c.eos_token_ids.empty() ? "(none)" : fmt::format("{}", fmt::join(c.eos_token_ids, ",")),
        r.generate_s * 1e3, caches);
    for (const std::vector<std::int64_t>& g : r.generated) {
      fmt::print("  {}\n", fmt::join(g, " "));
      if (o.tokenizer)
        fmt::print("  text: {}\n", nlohmann::json(o.tokenizer->decode(g, true)).dump());
    }
  }
  if (!o.logits_out.empty()) fmt::print("logits written to {}\n", o.logits_out);
  if (diff)
    fmt::print("logits against {}: max |difference| {:.3g} (relative {:.3g})\n", o.compare,
               diff->first, diff->second);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return tpx::cli::main("tpx-run", argc, argv, run);
}
