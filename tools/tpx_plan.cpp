// tpx-plan: resolve a model's tensor-parallel plan without running it.
//
//   tpx-plan --config CONFIG.json [--plan PLAN.json] [--ds-config DS.json]
//            [--safetensors FILE_OR_INDEX] [--tp N] [--sp] [--ep N] [--json]
//
// Tensors come from the safetensors headers when given, else from the preset for the config's
// model_type. Prints every tensor's style and per-rank shard and the report (plan/resolve.hpp);
// `--json` prints one object instead. Exit 0 on success, 2 with one sentence on stderr for bad
// input.

#include <charconv>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/core.h>

#include "tpx/io/checkpoint.hpp"
#include "tpx/plan/resolve.hpp"

using namespace tpx;

namespace {

constexpr const char* usage =
    "usage: tpx-plan --config CONFIG.json [--plan PLAN.json] [--ds-config DS.json]\n"
    "                [--safetensors FILE_OR_INDEX] [--tp N] [--sp] [--ep N] [--json]\n"
    "Resolves how every tensor of the model is split over tp ranks and reports what in the plan\n"
    "is wrong or costly. Tensors come from the safetensors headers, or from the preset for the\n"
    "config's model_type. Exit 0 on success, 2 on bad input.\n";

struct options {
  std::string config, plan, ds, safetensors;
  std::optional<int> tp;
  int ep = 1;
  bool sp = false, json = false;
};

int whole_number(std::string_view flag, std::string_view text) {
  int v = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  expect(ec == std::errc() && end == text.data() + text.size(), "{} takes a whole number, got '{}'",
         flag, text);
  return v;
}

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
      o.tp = whole_number(a, value());
    else if (a == "--ep")
      o.ep = whole_number(a, value());
    else if (a == "--sp")
      o.sp = true;
    else if (a == "--json")
      o.json = true;
    else
      fail("unknown argument '{}'; run tpx-plan --help", a);
  }
  expect(!o.config.empty(), "--config CONFIG.json is required");
  return o;
}

nlohmann::json read_json(const std::string& path, std::string_view what) {
  std::ifstream in(path, std::ios::binary);
  expect(in.good(), "cannot read {} '{}': {}", what, path,
         std::filesystem::exists(path) ? "it cannot be opened" : "no such file");
  std::ostringstream text;
  text << in.rdbuf();
  try {
    return nlohmann::json::parse(text.str());
  } catch (const nlohmann::json::parse_error& e) {
    std::string why = e.what();
    if (const std::size_t at = why.find("] "); at != std::string::npos) why = why.substr(at + 2);
    fail("{} '{}' is not valid JSON ({})", what, path, why);
  }
}

std::string human(double bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (bytes >= 1024 && u < 4) {
    bytes /= 1024;
    ++u;
  }
  return u == 0 ? fmt::format("{:.0f} B", bytes) : fmt::format("{:.2f} {}", bytes, units[u]);
}

/// One row of the text table: tensors with the same name pattern, style and shards.
struct row {
  std::string pattern, style, shape, split, shards;
  int count = 0;
};

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
  std::vector<row> rows;
  std::map<std::string, std::size_t> index;
  for (const plan::resolved_tensor& t : r.tensors) {
    row x{plan::detail::name_pattern(t.tensor.name), t.style, shard::shape_string(t.tensor.shape),
          t.placement.is_replicated() ? "-" : std::to_string(t.placement.dim), shards_of(t, tp)};
    const std::string key = x.pattern + '|' + x.style + '|' + x.shape + '|' + x.shards;
    const auto [it, fresh] = index.emplace(key, rows.size());
    if (fresh) rows.push_back(std::move(x));
    ++rows[it->second].count;
  }
  std::size_t w_name = 6, w_style = 5, w_shape = 12;
  for (const row& x : rows) {
    w_name = std::max(w_name,
                      x.pattern.size() + (x.count > 1 ? fmt::format(" ×{}", x.count).size() : 0));
    w_style = std::max(w_style, x.style.size());
    w_shape = std::max(w_shape, x.shape.size());
  }
  fmt::print("{:<{}}  {:<{}}  {:<{}}  {:<5}  {}\n", "tensor", w_name, "style", w_style,
             "global shape", w_shape, "split", "rank shapes");
  for (const row& x : rows)
    fmt::print("{:<{}}  {:<{}}  {:<{}}  {:<5}  {}\n",
               x.pattern + (x.count > 1 ? fmt::format(" ×{}", x.count) : ""), w_name, x.style,
               w_style, x.shape, w_shape, x.split, x.shards);

  // The report lists unmatched tensors by name pattern, as the table does.
  std::vector<std::string> unmatched;
  std::map<std::string, int> counts;
  for (const std::string& n : r.report.unmatched) {
    const std::string p = plan::detail::name_pattern(n);
    if (counts[p]++ == 0) unmatched.push_back(p);
  }
  for (std::string& p : unmatched)
    if (counts[p] > 1) p += fmt::format(" ×{}", counts[p]);
  fmt::print("\nreport\n");
  fmt::print("  unmatched tensors (left replicated): {}\n", r.report.unmatched.size());
  for (const std::string& s : unmatched) fmt::print("    {}\n", s);
  print_list("rules that matched nothing", r.report.unused_rules);
  print_list("rules that could not be honoured", r.report.unsupported);
  print_list("warnings", r.report.warnings);
  const auto [lo, hi] = std::minmax_element(r.param_bytes.begin(), r.param_bytes.end());
  fmt::print("\ntotals\n");
  fmt::print("  parameter bytes per rank: max {} ({}), min {} ({})\n", *hi, human(double(*hi)), *lo,
             human(double(*lo)));
  fmt::print("  communication per token per layer: forward {} B, backward {} B\n", r.comm_forward,
             r.comm_backward);
}

int run(int argc, char** argv) {
  for (int i = 1; i < argc; ++i)
    if (std::string_view(argv[i]) == "--help" || std::string_view(argv[i]) == "-h") {
      fmt::print("{}", usage);
      return 0;
    }
  const options o = parse_args(argc, argv);
  const nlohmann::json config_json = read_json(o.config, "config");
  const plan::model_config c = plan::parse_model_config(config_json, o.config);
  const plan::registry styles = plan::registry::builtin();

  plan::plan_sources src;
  std::optional<plan::hf_plan> hf;
  if (!o.plan.empty()) {
    hf = plan::parse_hf_plan(read_json(o.plan, "plan"), o.plan, c.causal_lm(), styles);
    src.hf_name = "plan " + o.plan;
  } else if (config_json.contains("base_model_tp_plan") || config_json.contains("lm_tp_plan")) {
    // The plan config.json carries: only its plan sections are read.
    nlohmann::json sections = nlohmann::json::object();
    for (const char* k : {"base_model_tp_plan", "base_model_ep_plan", "base_model_sp_plan",
                          "lm_tp_plan", "lm_sp_plan"})
      if (config_json.contains(k)) sections[k] = config_json.at(k);
    hf = plan::parse_hf_plan(sections, o.config, c.causal_lm(), styles);
    src.hf_name = "config " + o.config;
  }
  if (hf) src.hf = &*hf;

  std::optional<plan::ds_config> ds;
  if (!o.ds.empty()) {
    ds = plan::parse_deepspeed(read_json(o.ds, "DeepSpeed config"), o.ds);
    src.deepspeed = &*ds;
  }
  src.preset = plan::find_preset(c.model_type);
  if (src.preset == nullptr && ds && !ds->preset_model.empty())
    src.preset = plan::find_preset(ds->preset_model);

  int tp = o.tp.value_or(ds && ds->autotp_size > 0 ? ds->autotp_size : 1);
  if (o.tp && ds && ds->autotp_size > 0)
    expect(*o.tp == ds->autotp_size, "--tp {} disagrees with autotp_size {} in {}", *o.tp,
           ds->autotp_size, o.ds);
  expect(tp >= 1, "--tp must be at least 1, got {}", tp);
  expect(o.ep >= 1, "--ep must be at least 1, got {}", o.ep);

  std::vector<plan::tensor_decl> tensors;
  std::string from;
  if (!o.safetensors.empty()) {
    // Names and shapes from the headers; what the preset knows of a tensor (fused blocks, the
    // [in, out] layout) is kept when the names agree.
    std::map<std::string, plan::tensor_decl> known;
    if (src.preset != nullptr)
      for (plan::tensor_decl& d : src.preset->tensors(c)) known.emplace(d.name, std::move(d));
    const io::checkpoint ckpt(o.safetensors);
    for (const std::string& name : ckpt.names()) {
      const io::tensor_info& info = ckpt.info(name);
      plan::tensor_decl d{name, info.shape};
      if (const auto it = known.find(name); it != known.end() && it->second.shape == info.shape)
        d = it->second;
      d.element_bytes = static_cast<index_t>(io::size_of(info.dtype));
      tensors.push_back(std::move(d));
    }
    from = "from " + o.safetensors;
  } else {
    expect(src.preset != nullptr,
           "{}: there is no preset for model type '{}' to list its tensors; give --safetensors "
           "with the checkpoint",
           o.config, c.model_type);
    tensors = src.preset->tensors(c);
    from = "from the " + c.model_type + " preset";
  }

  const plan::resolution r =
      plan::resolve(c, std::move(tensors), src, styles, {.tp = tp, .sp = o.sp, .ep = o.ep});
  if (o.json)
    fmt::print("{}\n", plan::to_json(r).dump(1));
  else
    print_text(r, c, from);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::string why = e.what();
    for (char& ch : why)
      if (ch == '\n') ch = ' ';
    std::fprintf(stderr, "tpx-plan: %s\n", why.c_str());
    return 2;
  }
}
