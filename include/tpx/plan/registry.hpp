#pragma once
/// \file
/// The style registry: the strings of a plan (Hugging Face `tp_plan`s in all three vocabularies
/// transformers has shipped, and tpx's own names) mapped onto tpx policies — a style family plus
/// the options that Megatron and Hugging Face pass as separate strings or flags.
///
///   "colwise"                → colwise, output sharded            (style::colwise<>)
///   "colwise_gather_output"  → colwise, output all-gathered       (style::colwise_gathered)
///   "colwise_rep"            → the same, older vocabulary
///   "rowwise_reduce_scatter" → rowwise, output reduce-scattered to sequence shards (SP)
///   "packed_colwise"         → colwise over a fused weight, each block split on its own
///   "unit_colwise"           → colwise in whole units (heads) on the unit mesh: units split over
///                              gcd(units, tp) groups, replicated over tp / gcd ranks (5.25)
///   "ep_dispatch_experts"    → an expert-parallel experts module; the dispatch is an option
///                              (`dispatch`: all_to_all, all_reduce, auto)
///
/// The registry is data: users add their own strings (`add`) or aliases (`alias`) at run time.
/// An unknown string is an error that lists every known one.

#include <algorithm>
#include <iterator>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "tpx/core/error.hpp"
#include "tpx/style/colwise.hpp"
#include "tpx/style/description.hpp"
#include "tpx/style/moe_experts.hpp"
#include "tpx/style/replicate.hpp"
#include "tpx/style/rowwise.hpp"
#include "tpx/style/sequence_parallel.hpp"
#include "tpx/style/vocab_parallel.hpp"

namespace tpx::inline v0::plan {

/// The policy family a string selects.
enum class family {
  colwise,            ///< linear, weight split on the out dim (rows)
  rowwise,            ///< linear, weight split on the in dim (columns)
  replicate,          ///< every rank holds the whole parameter
  sequence_parallel,  ///< norm: parameters replicated, activations split on the sequence dim
  vocab_embedding,    ///< embedding split on the vocabulary dim (rows), partial outputs reduced
  hidden_embedding,   ///< embedding split on the hidden dim (columns), outputs gathered
  moe_experts,        ///< experts module: TP inside the experts, expert output all-reduced
  identity_expert,    ///< identity expert: input pre-divided by tp so the all-reduce sums it once
  grouped_gemm,       ///< expert parameters split on dim 0: whole experts per rank (EP)
  ep_router,          ///< replicated router; non-local experts masked, local ids remapped
  mla_kv_a_proj,      ///< replicated; backward all-reduces the rope part of the output grad
  module,             ///< a module-level collective on a module's input or output
};

/// A collective a style runs on an activation in forward (the styles' own vocabulary).
using collective = style::collective;

/// How an expert-parallel experts module (`ep_dispatch_experts`) moves its tokens to the ranks
/// owning their experts; transformers 5.24 takes it apart from the plan, and so does
/// `resolve_options::dispatch`:
///   all_to_all   style::moe_all_to_all: each token row travels to its experts' ranks and back
///   all_reduce   style::moe_masked: every rank holds every token, runs its own experts on the
///                tokens routed to them and the outputs are all-reduced
///   automatic    ("auto") style::moe_expert_parallel: all_to_all under sequence parallelism
///                (tokens split on the sequence), all_reduce otherwise
/// (transformers' fourth implementation, `deepgemm_megamoe`, is DeepGEMM's fused kernel that
/// exchanges the tokens itself; tpx refuses it by name.)
enum class dispatch { automatic, all_to_all, all_reduce };

constexpr std::string_view name(dispatch d) noexcept {
  return d == dispatch::automatic    ? "auto"
         : d == dispatch::all_to_all ? "all_to_all"
                                     : "all_reduce";
}
/// The dispatch transformers names `text` (its `DistributedConfig.ep_implementation`: "auto",
/// "all_to_all", "all_reduce"); an error naming `what` (the option or key) otherwise.
inline dispatch parse_dispatch(std::string_view text, std::string_view what) {
  for (const dispatch d : {dispatch::automatic, dispatch::all_to_all, dispatch::all_reduce})
    if (text == name(d)) return d;
  if (text == "deepgemm_megamoe")
    fail(
        "{} deepgemm_megamoe is transformers' DeepGEMM Mega MoE kernel, which tpx does not have; "
        "the dispatch it fuses is all_to_all: use all_to_all (or auto)",
        what);
  fail(
      "{} must be auto, all_to_all or all_reduce (how expert-parallel tokens reach their "
      "experts), got '{}'",
      what, text);
}

constexpr std::string_view name(family f) noexcept {
  constexpr std::string_view names[] = {"colwise",           "rowwise",         "replicate",
                                        "sequence_parallel", "vocab_embedding", "hidden_embedding",
                                        "moe_experts",       "identity_expert", "grouped_gemm",
                                        "ep_router",         "mla_kv_a_proj",   "module"};
  return names[static_cast<int>(f)];
}

/// What a style string means to tpx.
struct style_spec {
  family kind = family::replicate;
  collective input = collective::none;   ///< on the module's input, forward
  collective output = collective::none;  ///< on the module's output, forward
  bool packed = false;                   ///< a fused weight split block by block
  bool local = false;            ///< slices only: an enclosing module entry runs the collective
  bool grad_all_reduce = false;  ///< replicated parameters whose gradients are all-reduced
  bool divide_by_tp = false;     ///< replicated, scaled by 1/tp so a parent all-reduce sums it back
  bool loss_parallel = false;    ///< logits stay vocab-sharded for a vocab-parallel loss
  /// Whole units (heads of head_dim) on transformers 5.25's unit mesh (shard::units): colwise
  /// sums the replicated units' weight gradients over their replicas, rowwise reduces its output
  /// over the unit axis only (`unit_colwise`, `unit_rowwise`).
  bool units = false;
  int sequence_dim = 1;  ///< activations' sequence dim for sequence-parallel norms
  /// An expert-parallel experts module whose token dispatch is chosen apart from the plan
  /// (`ep_dispatch_experts`); plan resolution sets it to `resolve_options::dispatch`.
  std::optional<plan::dispatch> dispatch = std::nullopt;
  std::string vocabulary = "tpx";  ///< where the string comes from: current, older, dtensor, tpx

  /// The weight dim the style splits: 0 (rows / vocab / experts), 1 (columns), -1 (none).
  int split_dim() const noexcept {
    switch (kind) {
      case family::colwise:
      case family::vocab_embedding:
      case family::grouped_gemm:
        return 0;
      case family::rowwise:
      case family::hidden_embedding:
        return 1;
      default:
        return -1;
    }
  }
  /// The compile-time policy for the linear families, as C++ spells it; otherwise the family.
  std::string policy() const {
    if (units)
      return kind == family::colwise ? "style::colwise<> on shard::units"
                                     : "style::rowwise<> on shard::units";
    if (kind == family::colwise)
      return output == collective::all_gather ? "style::colwise_gathered" : "style::colwise<>";
    if (kind == family::rowwise)
      return input == collective::split ? "style::rowwise_split" : "style::rowwise<>";
    if (kind == family::replicate)
      return grad_all_reduce ? "style::replicate_grad_all_reduce" : "style::replicate<>";
    return std::string(name(kind));
  }
  friend bool operator==(const style_spec&, const style_spec&) = default;
};

/// The transformers releases whose style vocabularies tpx knows apart.
enum class hf_release { v5_24, v5_25 };

constexpr std::string_view name(hf_release r) noexcept {
  return r == hf_release::v5_24 ? "5.24" : "5.25";
}

/// Whether transformers `release` registers `style` (its `ALL_PARALLEL_STYLES` and the EP side's
/// strings): a plan written with these alone is one it accepts. Both refuse `ep_router`, the
/// `local*` slices, `gather` and the DTensor names, which tpx still reads; 5.25 added
/// `unit_colwise` / `unit_rowwise` and removed `moe_identity_expert`.
inline bool transformers_registers(std::string_view style, hf_release release = hf_release::v5_25) {
  constexpr std::string_view accepted[] = {
      "embedding_rowwise",     "embedding_colwise", "colwise",
      "colwise_gather_output", "colwise_rep",       "rowwise",
      "rowwise_split_input",   "rowwise_rep",       "packed_colwise",
      "packed_rowwise",        "sequence_parallel", "replicated_with_grad_allreduce",
      "mla_kv_a_proj",         "all_reduce",        "moe_tp_experts",
      "local_params",          "replicate",         "grouped_gemm",
      "ep_dispatch_experts"};
  if (style == "moe_identity_expert") return release == hf_release::v5_24;
  if (style == "unit_colwise" || style == "unit_rowwise") return release >= hf_release::v5_25;
  return std::find(std::begin(accepted), std::end(accepted), style) != std::end(accepted);
}

/// What transformers 5.25 says of `style` where it deprecates it (removal in 5.28), else empty.
inline std::string_view transformers_deprecates(std::string_view style) {
  if (style == "moe_tp_experts")
    return "transformers 5.25 deprecates expert tensor parallelism (moe_tp_experts, removal in "
           "5.28; its plans send experts through the EP plan: ep_dispatch_experts + grouped_gemm). "
           "tpx keeps it: each rank holds 1 / tp of every expert, the least memory for experts "
           "when tokens are few";
  if (style == "ep_router")
    return "transformers 5.25 deprecates ep_router (removal in 5.28; its EP plans route on every "
           "rank and dispatch with ep_dispatch_experts, as DistributedConfig.ep_implementation = "
           "all_reduce); tpx still reads it";
  return {};
}

/// Style strings → specs.
class registry {
 public:
  /// Every string of the three Hugging Face vocabularies, plus tpx's own names.
  static registry builtin() {
    registry r;
    using c = collective;
    // A string that names a tpx style takes its collectives from the style's description.
    const auto col = [](auto style, std::string vocab) {
      return spec_of<typename decltype(style)::type>(family::colwise, std::move(vocab));
    };
    const auto row = [](auto style, std::string vocab) {
      return spec_of<typename decltype(style)::type>(family::rowwise, std::move(vocab));
    };
    const auto vocab = [](auto style, std::string v) {
      return spec_of<typename decltype(style)::type>(family::vocab_embedding, std::move(v));
    };
    const auto experts = [](auto style, std::string v) {
      return spec_of<typename decltype(style)::type>(family::moe_experts, std::move(v));
    };
    const auto with = [](style_spec s, auto change) {
      change(s);
      return s;
    };
    const auto packed = [](style_spec& s) { s.packed = true; };
    constexpr std::type_identity<style::colwise<>> colwise;
    constexpr std::type_identity<style::colwise_gathered> gathered;
    constexpr std::type_identity<style::colwise_sp> colwise_sp;
    constexpr std::type_identity<style::rowwise<>> rowwise;
    constexpr std::type_identity<style::rowwise_split> split;
    constexpr std::type_identity<style::rowwise_sp> rowwise_sp;
    constexpr std::type_identity<style::vocab_parallel<>> vocab_parallel;
    constexpr std::type_identity<style::vocab_parallel_sp> vocab_sp;
    const auto norm = [](std::string v) {
      return spec_of<style::sequence_parallel>(family::sequence_parallel, std::move(v));
    };
    // In every vocabulary.
    r.add("colwise", col(colwise, "all"));
    r.add("rowwise", row(rowwise, "all"));
    r.add("sequence_parallel", norm("all"));
    // Current (transformers v5.1+).
    r.add("colwise_gather_output", col(gathered, "current"));
    r.add("rowwise_split_input", row(split, "current"));
    r.add("packed_colwise", with(col(colwise, "current"), packed));
    r.add("packed_rowwise", with(row(rowwise, "current"), packed));
    // transformers 5.25: whole heads on the unit mesh, replicated where gcd(heads, tp) < tp.
    const auto units = [](style_spec& s) { s.units = true; };
    r.add("unit_colwise", with(col(colwise, "current"), units));
    r.add("unit_rowwise", with(row(rowwise, "current"), units));
    r.add("embedding_rowwise", vocab(vocab_parallel, "current"));
    // An embedding split on the hidden dim: no tpx style; its output is all-gathered.
    r.add("embedding_colwise",
          {.kind = family::hidden_embedding, .output = c::all_gather, .vocabulary = "current"});
    r.add("replicated_with_grad_allreduce",
          spec_of<style::replicate_grad_all_reduce>(family::replicate, "current"));
    r.add("moe_tp_experts", experts(std::type_identity<style::moe_tensor>(), "current"));
    r.add("moe_identity_expert", {.kind = family::identity_expert, .vocabulary = "current"});
    r.add("grouped_gemm", {.kind = family::grouped_gemm, .vocabulary = "current"});
    r.add("ep_router", {.kind = family::ep_router, .vocabulary = "current"});
    r.add("mla_kv_a_proj", {.kind = family::mla_kv_a_proj, .vocabulary = "current"});
    r.add("all_reduce", {.kind = family::module, .output = c::all_reduce, .vocabulary = "current"});
    // transformers 5.24: an experts module whose tokens go to the ranks owning whole experts;
    // the dispatch (all_to_all, all_reduce, auto) is chosen apart from the plan (`dispatch`).
    r.add("ep_dispatch_experts", with(experts(std::type_identity<style::moe_masked>(), "current"),
                                      [](style_spec& s) { s.dispatch = dispatch::automatic; }));
    // transformers 5.24: a module that runs on its own (sharded) parameters as local tensors,
    // e.g. attention with sinks; it adds no collective (its parameters' rules place them).
    r.add("local_params", {.kind = family::module, .vocabulary = "current"});
    // Older (transformers ≤ 2026-01).
    r.add("colwise_rep", col(gathered, "older"));
    r.add("rowwise_rep", row(split, "older"));
    // Slices whose collective an enclosing module rule runs: the style's placement, no
    // collective of their own.
    r.add("local_colwise", {.kind = family::colwise, .local = true, .vocabulary = "older"});
    r.add("local_rowwise", {.kind = family::rowwise, .local = true, .vocabulary = "older"});
    r.add("local_packed_rowwise",
          {.kind = family::rowwise, .packed = true, .local = true, .vocabulary = "older"});
    r.add("local", {.kind = family::replicate, .divide_by_tp = true, .vocabulary = "older"});
    r.add("gather", {.kind = family::module, .output = c::all_reduce, .vocabulary = "older"});
    r.add("replicate", spec_of<style::replicate<>>(family::replicate, "older"));
    // PyTorch DTensor styles, as transformers named them.
    r.add("colwise_allgather", col(gathered, "dtensor"));
    r.add("colwise_loss_parallel",
          with(col(colwise, "dtensor"), [](style_spec& s) { s.loss_parallel = true; }));
    r.add("rowwise_allreduce", row(rowwise, "dtensor"));
    r.add("rowwise_reduce_scatter", row(rowwise_sp, "dtensor"));
    r.add("vocab_allreduce", vocab(vocab_parallel, "dtensor"));
    r.add("vocab_reduce_scatter", vocab(vocab_sp, "dtensor"));
    r.add("activation", norm("dtensor"));
    r.add("activation_seq_dim_2", with(norm("dtensor"), [](style_spec& s) { s.sequence_dim = 2; }));
    r.add("module_allgather",
          {.kind = family::module, .input = c::all_gather, .vocabulary = "dtensor"});
    r.add("module_allgather_hidden_states",
          {.kind = family::module, .input = c::all_gather, .vocabulary = "dtensor"});
    r.add("module_allgather_split", {.kind = family::module,
                                     .input = c::all_gather,
                                     .output = c::split,
                                     .vocabulary = "dtensor"});
    r.add("moe_experts_allreduce", experts(std::type_identity<style::moe_tensor>(), "dtensor"));
    // tpx's own names of its styles that no Hugging Face string spells (style::*::name).
    r.add("colwise_sequence_parallel", col(colwise_sp, "tpx"));
    r.add("rowwise_sequence_parallel", row(rowwise_sp, "tpx"));
    r.add("vocab_parallel", vocab(vocab_parallel, "tpx"));
    r.add("vocab_parallel_sequence", vocab(vocab_sp, "tpx"));
    return r;
  }

  /// The spec of a string naming tpx style `S` of `kind`: the collectives on the module's input
  /// and output in forward, and the gradient all-reduce, are `style::describe<S>()`'s.
  template <class S>
  static style_spec spec_of(family kind, std::string vocabulary) {
    constexpr style::description d = style::describe<S>();
    return {.kind = kind,
            .input = d.forward.input,
            .output = d.forward.output,
            .grad_all_reduce = d.grad_all_reduce,
            .vocabulary = std::move(vocabulary)};
  }

  /// Registers a new string. Errors if it is registered already.
  void add(std::string name, style_spec spec) {
    expect(!name.empty(), "plan::registry: a style string cannot be empty");
    if (const auto it = styles_.find(name); it != styles_.end())
      fail(
          "plan::registry: the style string '{}' is registered already (as {}); pick another "
          "name",
          name, it->second.policy());
    styles_.emplace(std::move(name), std::move(spec));
  }
  /// Registers `name` as another spelling of the known string `existing`.
  void alias(std::string name, std::string_view existing) {
    style_spec s = at(existing);
    s.vocabulary = "alias of " + std::string(existing);
    add(std::move(name), std::move(s));
  }

  bool contains(std::string_view name) const { return styles_.find(name) != styles_.end(); }
  const style_spec* find(std::string_view name) const {
    const auto it = styles_.find(name);
    return it == styles_.end() ? nullptr : &it->second;
  }
  /// The spec of `name`; an error that lists every known string if there is none.
  const style_spec& at(std::string_view name) const {
    const style_spec* s = find(name);
    expect(s != nullptr, "unknown style string '{}'; known: {}", name, known());
    return *s;
  }
  /// Every known string, sorted.
  std::vector<std::string> names() const {
    std::vector<std::string> n;
    for (const auto& [k, v] : styles_) n.push_back(k);
    return n;
  }
  /// "all_reduce, activation, …": the known strings for messages.
  std::string known() const {
    std::string s;
    for (const auto& [k, v] : styles_) s += (s.empty() ? "" : ", ") + k;
    return s;
  }

 private:
  std::map<std::string, style_spec, std::less<>> styles_;
};

}  // namespace tpx::inline v0::plan
