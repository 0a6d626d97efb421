// tpx-plan: resolve a model's tensor-parallel plan without running it.
//
//   tpx-plan (MODEL_DIR | --config CONFIG.json [--safetensors FILE_OR_INDEX]) [--plan PLAN.json]
//            [--ds-config DS.json] [--tp N] [--sp] [--ep N] [--split balanced|chunk]
//            [--ep-dispatch auto|all_to_all|all_reduce] [--json | --emit-hf-plan]
//
// A model directory, as tpx-run takes it, gives config.json and its checkpoint's tensors.
// Tensors come from the safetensors headers when given, else from the preset for the config's
// model_type. Prints every tensor's style and per-rank shard and the report (plan/resolve.hpp);
// `--json` prints one object instead; `--emit-hf-plan` prints the deciding plan as a plan JSON
// transformers 5.24 loads. Exit 0 on success, 2 with one sentence on stderr for bad
// input.

#include <charconv>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/core.h>

#include "cli.hpp"
#include "tpx/io/checkpoint.hpp"
#include "tpx/model/plan.hpp"
#include "tpx/plan/resolve.hpp"
#include "tpx/plan/visit.hpp"

using namespace tpx;

namespace {

constexpr const char* usage =
    "usage: tpx-plan (MODEL_DIR | --config CONFIG.json [--safetensors FILE_OR_INDEX])\n"
    "                [--plan PLAN.json] [--ds-config DS.json] [--tp N] [--sp] [--ep N]\n"
    "                [--split balanced|chunk] [--ep-dispatch auto|all_to_all|all_reduce]\n"
    "                [--json | --emit-hf-plan]\n"
    "Resolves how every tensor of the model is split over tp ranks and reports what in the plan\n"
    "is wrong or costly. Tensors come from the safetensors headers, or from the preset for the\n"
    "config's model_type.\n"
    "  MODEL_DIR        a model directory as tpx-run takes it: its config.json, and the tensors\n"
    "                   of its model.safetensors or index (the preset's when it has neither)\n"
    "  --config F       the model's config.json (dims; its plan sections, if any, are a plan)\n"
    "  --plan F         a Hugging Face plan JSON (tp_plan, or base_model_tp_plan / _ep_plan /\n"
    "                   _sp_plan / lm_tp_plan); it outranks config.json's sections and the preset\n"
    "  --ds-config F    a DeepSpeed config whose tensor_parallel.partition_config outranks both\n"
    "  --safetensors F  the tensors from safetensors headers: a file, an index or a directory\n"
    "                   (default: the preset's tensors for the config's model_type)\n"
    "  --tp N           ranks (default 1; the DeepSpeed config's autotp_size when given)\n"
    "  --sp             sequence parallelism: the SP plan's norms, and a 'runs as' column\n"
    "  --ep N           expert parallelism over the tp ranks (1 or tp): the EP plan's experts\n"
    "  --split          how an uneven dim is cut: balanced (sizes differ by at most one, tpx's\n"
    "                   layers) or chunk (torch.chunk, as transformers' DTensor shards)\n"
    "  --ep-dispatch    how expert-parallel tokens reach their experts (ep_dispatch_experts):\n"
    "                   all_to_all, all_reduce (every rank holds every token, outputs summed)\n"
    "                   or auto (all_to_all under --sp, else all_reduce; what tpx-run runs):\n"
    "                   transformers' ep_implementation (its deepgemm_megamoe is refused)\n"
    "  --json           the resolution as one JSON object\n"
    "  --emit-hf-plan   print the deciding plan (--plan, config.json's sections, or the preset)\n"
    "                   as base_model_tp_plan / base_model_ep_plan / lm_tp_plan JSON that\n"
    "                   transformers 5.25 loads; tpx's SP sections are left out\n"
    "  --version        prints the program's and tpx's version\n"
    "Exit 0 on success, 2 on bad input.\n";

struct options {
  std::string dir, config, plan, ds, safetensors;
  std::optional<int> tp;
  int ep = 1;
  bool sp = false, json = false, emit = false;
  shard::split_kind split = shard::split_kind::balanced;
  plan::dispatch dispatch = plan::dispatch::automatic;
};

options parse_args(int argc, char** argv) {
  options o;
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    const auto value = [&]() -> std::string_view {
      expect(i + 1 < argc, "{} needs a value", a);
      return argv[++i];
    };
    if (a == "--config")
      o.config = value();
    else if (a == "--plan")
      o.plan = value();
    else if (a == "--ds-config")
      o.ds = value();
    else if (a == "--safetensors")
      o.safetensors = value();
    else if (a == "--tp")
      o.tp = static_cast<int>(cli::whole_number(a, value(), 1, max_ranks));
    else if (a == "--ep")
      o.ep = static_cast<int>(cli::whole_number(a, value(), 1, max_ranks));
    else if (a == "--sp")
      o.sp = true;
    else if (a == "--split") {
      const std::string_view v = value();
      expect(v == "balanced" || v == "chunk",
             "--split must be balanced (sizes differ by at most one) or chunk (torch.chunk, as "
             "transformers shards), got '{}'",
             v);
      o.split = v == "chunk" ? shard::split_kind::chunk : shard::split_kind::balanced;
    } else if (a == "--ep-dispatch")
      o.dispatch = plan::parse_dispatch(value(), "--ep-dispatch");
    else if (a == "--json")
      o.json = true;
    else if (a == "--emit-hf-plan")
      o.emit = true;
    else if (!a.starts_with("-")) {
      expect(o.dir.empty(), "one model directory, got '{}' and '{}'", o.dir, a);
      o.dir = a;
    } else
      fail("unknown argument '{}'; run tpx-plan --help", a);
  }
  if (!o.dir.empty()) {
    expect(o.config.empty() && o.safetensors.empty(),
           "{}: a model directory gives the config and the checkpoint; give it or --config / "
           "--safetensors, not both",
           o.dir);
    const std::filesystem::path dir(o.dir);
    std::error_code ec;
    expect(std::filesystem::is_directory(dir, ec),
           "{}: not a directory (a model directory holds config.json and its safetensors)", o.dir);
    o.config = (dir / "config.json").string();
    if (std::filesystem::exists(dir / "model.safetensors", ec) ||
        std::filesystem::exists(dir / "model.safetensors.index.json", ec))
      o.safetensors = o.dir;
  }
  expect(!o.config.empty(), "a model directory or --config CONFIG.json is required");
  expect(!(o.json && o.emit), "--json and --emit-hf-plan print different documents; give one");
  return o;
}

/// One row of the text table: tensors with the same name pattern, style and shards. Experts held
/// whole by one rank each share one row that says which rank owns which experts.
struct row {
  std::string pattern, style, runs, shape, split, shards;
  int count = 0;
  std::map<index_t, int> owners;  ///< expert index → the rank holding it whole
};

/// The one rank holding all of a per-expert tensor while the others hold none of it, or −1.
int owner_of(const plan::resolved_tensor& t, int tp) {
  if (t.placement.is_replicated() || !plan::expert_of(t.tensor.name)) return -1;
  int owner = -1;
  for (int r = 0; r < tp; ++r) {
    const std::vector<index_t> s = t.rank_shape(r);
    if (s == t.tensor.shape && shard::element_count(s) > 0) {
      if (owner >= 0) return -1;
      owner = r;
    } else if (shard::element_count(s) != 0) {
      return -1;
    }
  }
  return owner;
}

/// The tpx style a tensor runs as (its SP form under `sp`): the experts module's for expert
/// tensors, "-" for a family with no tpx layer.
std::string runs_as(const plan::resolved_tensor& t, bool sp) {
  if (t.tensor.name.find(".experts.") != std::string::npos) return "(experts module)";
  const std::optional<std::string_view> n = plan::runs_as(t.spec, sp);
  return n ? std::string(*n) : "-";
}

/// "experts 0–1 → rank 0, 2–3 → rank 1".
std::string owners_text(const std::map<index_t, int>& owners, int tp) {
  std::string out = "experts ";
  for (int r = 0; r < tp; ++r) {
    std::string ranges;
    for (auto it = owners.begin(); it != owners.end();) {
      if (it->second != r) {
        ++it;
        continue;
      }
      auto end = it;
      while (std::next(end) != owners.end() && std::next(end)->second == r &&
             std::next(end)->first == end->first + 1)
        ++end;
      ranges += (ranges.empty() ? "" : ", ") + (end->first == it->first
                                                    ? std::to_string(it->first)
                                                    : fmt::format("{}–{}", it->first, end->first));
      it = std::next(end);
    }
    if (!ranges.empty())
      out += (out.size() > 8 ? ", " : "") + ranges + fmt::format(" → rank {}", r);
  }
  return out;
}

std::string shards_of(const plan::resolved_tensor& t, int tp) {
  // "[1024, 4096] ×4", or the distinct rank shapes in rank order.
  std::vector<std::string> shapes;
  for (int r = 0; r < tp; ++r) shapes.push_back(shard::shape_string(t.rank_shape(r)));
  std::string out;
  for (std::size_t i = 0; i < shapes.size();) {
    std::size_t j = i;
    while (j < shapes.size() && shapes[j] == shapes[i]) ++j;
    out += (out.empty() ? "" : " ") + shapes[i] + (j - i > 1 ? fmt::format(" ×{}", j - i) : "");
    i = j;
  }
  return out;
}

void print_list(std::string_view title, const std::vector<std::string>& items) {
  fmt::print("  {}: {}\n", title, items.empty() ? "none" : std::to_string(items.size()));
  for (const std::string& s : items) fmt::print("    {}\n", s);
}

void print_text(const plan::resolution& r, const plan::model_config& c, std::string_view tensors) {
  const int tp = r.options.tp;
  fmt::print("tpx-plan: model type {}, {} tensors ({}), tp {}, ep {}, sp {}; decided by {}\n\n",
             c.model_type.empty() ? "(none)" : c.model_type, r.tensors.size(), tensors, tp,
             r.options.ep, r.options.sp ? "on" : "off", r.decided_by);
  if (r.decided_by.starts_with("preset "))
    fmt::print(
        "(no plan given and config.json carries no plan sections — save_pretrained writes none; "
        "transformers' plan is its model class's — so tpx's {} decides)\n\n",
        r.decided_by);
  std::vector<row> rows;
  std::map<std::string, std::size_t> index;
  for (const plan::resolved_tensor& t : r.tensors) {
    const int owner = owner_of(t, tp);
    const bool placed = t.unplaceable.empty();
    row x{plan::name_pattern(t.tensor.name),
          t.style,
          runs_as(t, r.options.sp),
          shard::shape_string(t.tensor.shape),
          !placed                       ? "none"
          : t.placement.is_replicated() ? "-"
          : owner >= 0                  ? "whole"
                                        : std::to_string(t.placement.dim),
          !placed      ? "unplaceable at this tp (see the report)"
          : owner >= 0 ? ""
                       : shards_of(t, tp),
          0,
          {}};
    const std::string key =
        x.pattern + '|' + x.style + '|' + x.runs + '|' + x.shape + '|' + x.shards;
    const auto [it, fresh] = index.emplace(key, rows.size());
    if (fresh) rows.push_back(std::move(x));
    row& into = rows[it->second];
    ++into.count;
    if (owner >= 0) into.owners[*plan::expert_of(t.tensor.name)] = owner;
  }
  for (row& x : rows)
    if (!x.owners.empty()) x.shards = owners_text(x.owners, tp);
  // Under --sp a column says which tpx style each tensor runs as in its sequence-parallel form.
  const bool sp = r.options.sp;
  std::size_t w_name = 6, w_style = 5, w_runs = sp ? 7 : 0, w_shape = 12;
  for (const row& x : rows) {
    w_name = std::max(w_name,
                      x.pattern.size() + (x.count > 1 ? fmt::format(" ×{}", x.count).size() : 0));
    w_style = std::max(w_style, x.style.size());
    if (sp) w_runs = std::max(w_runs, x.runs.size());
    w_shape = std::max(w_shape, x.shape.size());
  }
  const auto line = [&](std::string_view name, std::string_view style, std::string_view runs,
                        std::string_view shape, std::string_view split, std::string_view shards) {
    fmt::print("{:<{}}  {:<{}}  ", name, w_name, style, w_style);
    if (sp) fmt::print("{:<{}}  ", runs, w_runs);
    fmt::print("{:<{}}  {:<5}  {}\n", shape, w_shape, split, shards);
  };
  line("tensor", "style", "runs as", "global shape", "split", "rank shapes");
  for (const row& x : rows)
    line(x.pattern + (x.count > 1 ? fmt::format(" ×{}", x.count) : ""), x.style, x.runs, x.shape,
         x.split, x.shards);

  // The report lists unmatched tensors by name pattern, as the table does.
  std::vector<std::string> unmatched;
  std::map<std::string, int> counts;
  for (const std::string& n : r.report.unmatched) {
    const std::string p = plan::name_pattern(n);
    if (counts[p]++ == 0) unmatched.push_back(p);
  }
  for (std::string& p : unmatched)
    if (counts[p] > 1) p += fmt::format(" ×{}", counts[p]);
  fmt::print("\nreport\n");
  fmt::print("  unmatched tensors (left replicated): {}\n", r.report.unmatched.size());
  for (const std::string& s : unmatched) fmt::print("    {}\n", s);
  print_list("rules that matched nothing", r.report.unused_rules);
  print_list("rules that could not be honoured", r.report.unsupported);
  print_list("unplaceable at this tp (the plan is not usable)", r.report.unplaceable);
  print_list("warnings", r.report.warnings);
  const auto [lo, hi] = std::minmax_element(r.param_bytes.begin(), r.param_bytes.end());
  fmt::print("\ntotals\n");
  fmt::print("  parameter bytes per rank: max {} ({}), min {} ({})\n", *hi, cli::human(double(*hi)),
             *lo, cli::human(double(*lo)));
  fmt::print(
      "  communication per token per layer: forward {} B (bus {:.0f} B), backward {} B (bus {:.0f} "
      "B)\n"
      "    (nccl-tests sizes: an all-reduce counts its buffer, an all-gather or reduce-scatter the "
      "whole tensor, an all-to-all the rows leaving the rank; bus bytes = size × 2(tp−1)/tp for "
      "all-reduce, × (tp−1)/tp for all-gather and reduce-scatter)\n",
      r.comm_forward, r.comm_forward_bus, r.comm_backward, r.comm_backward_bus);
}

int run(int argc, char** argv) {
  for (int i = 1; i < argc; ++i)
    if (std::string_view(argv[i]) == "--help" || std::string_view(argv[i]) == "-h") {
      fmt::print("{}", usage);
      return 0;
    }
  const options o = parse_args(argc, argv);
  const model::plan_inputs inputs(io::read_json_file(o.config, "config"), o.config, o.plan, o.ds);
  const plan::model_config& c = inputs.config();
  if (o.emit) {
    fmt::print("{}\n", inputs.transformers_plan().dump(2));
    return 0;
  }
  const int tp = inputs.tp(o.tp);
  expect(o.ep >= 1, "--ep must be at least 1, got {}", o.ep);
  std::vector<plan::tensor_decl> tensors;
  std::string from;
  if (!o.safetensors.empty()) {
    tensors = inputs.tensors(io::checkpoint(o.safetensors));
    from = "from " + o.safetensors;
  } else {
    tensors = inputs.preset_tensors();
    from = "from the " + c.model_type + " preset";
  }
  const plan::resolution r =
      inputs.resolve(std::move(tensors),
                     {.tp = tp, .sp = o.sp, .ep = o.ep, .split = o.split, .dispatch = o.dispatch});
  if (o.json)
    fmt::print("{}\n", plan::to_json(r).dump(1));
  else
    print_text(r, c, from);
  // Every other tensor is planned and printed; a tensor no placement serves makes the plan
  // unusable: its sentence on stderr, exit 2 (under --json the document printed already names
  // the tensors in report.unplaceable: no second document).
  std::fflush(stdout);
  try {
    r.expect_usable();
  } catch (const tpx::error& e) {
    cli::print_error("tpx-plan", e, false);
    return 2;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return tpx::cli::main("tpx-plan", argc, argv, run);
}
