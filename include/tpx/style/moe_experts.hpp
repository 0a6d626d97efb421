#pragma once
/// \file
/// Mixture-of-experts styles. Experts are stored gate_up [E, 2I, H] (gate rows, then up rows) and
/// down [E, H, I]; a token t goes to its top-k experts ids[t, ·] with routing weights w[t, ·] and
/// y_t = Σ_j w_tj · down_e(silu(gate_e x_t) ⊙ up_e x_t).
///
///   tensor            every rank holds every expert's slice of I: gate_up packed-colwise
///                     [E, 2I_r, H], down rowwise [E, H, I_r]; x, ids, w and y replicated;
///                     fwd one all-reduce of y; bwd all-reduce of dx and of d(w)
///   tensor_sequence   the same weights; x, ids, w, y split on tokens: fwd one all-gather of
///                     [x | ids | w], reduce-scatter of y; bwd all-gather dy, reduce-scatter dx
///                     and d(w)
///   all_to_all        expert parallel: rank r holds whole experts [r·E/ep, (r+1)·E/ep); x, ids,
///                     w, y split on tokens; each token row travels to the ranks of its experts
///                     and back (all-to-all-v dispatch + combine; conjugate all-to-all-v in bwd)
///   masked            expert parallel with replicated x (HF `ep_router`): each rank runs its own
///                     experts on the tokens routed to them, zeros elsewhere, then all-reduce;
///                     bwd all-reduce of dx and d(w)
///
///        tokens          experts (E = 4, ep = 2)             tokens
///   r0  t0 t1 ─┬─ a2a ─▶ e0 e1 ─┬─ a2a ─▶ t0 t1  combine Σ w·o
///   r1  t2 t3 ─┘         e2 e3 ─┘         t2 t3
///
/// A shared expert (DeepSeek / Qwen) beside the routed ones sees every token with weight 1; it is
/// split like the experts' I in the tensor and masked modes and replicated (gradients
/// all-reduced) under all_to_all.

#include <string_view>
#include <type_traits>

#include "tpx/style/layout.hpp"

namespace tpx::inline v0::style {

/// How experts are spread over the group.
enum class expert_split { tensor, tensor_sequence, all_to_all, masked };

template <expert_split Mode>
struct moe_experts {
  static constexpr expert_split mode = Mode;
  static constexpr bool expert_parallel =
      Mode == expert_split::all_to_all || Mode == expert_split::masked;
  static constexpr std::string_view name =
      Mode == expert_split::tensor            ? "moe_tensor_parallel"
      : Mode == expert_split::tensor_sequence ? "moe_tensor_parallel_sequence"
      : Mode == expert_split::all_to_all      ? "moe_expert_parallel_all_to_all"
                                              : "moe_expert_parallel_masked";
  /// Tokens (x, ids, w) in and y out.
  using input = std::conditional_t<Mode == expert_split::tensor || Mode == expert_split::masked,
                                   layout::replicate, layout::shard<0>>;
  using output = input;
};

using moe_tensor = moe_experts<expert_split::tensor>;
using moe_tensor_sp = moe_experts<expert_split::tensor_sequence>;
using moe_all_to_all = moe_experts<expert_split::all_to_all>;
using moe_masked = moe_experts<expert_split::masked>;

/// Expert parallelism as tpx chooses it when a plan leaves the dispatch open (transformers'
/// `ep_dispatch_experts` with dispatch `auto`): tokens already split on the sequence travel by
/// all-to-all; tokens every rank holds are masked locally and all-reduced, moving no token.
template <bool Sequence>
using moe_expert_parallel = std::conditional_t<Sequence, moe_all_to_all, moe_masked>;

}  // namespace tpx::inline v0::style
