#pragma once
/// \file
/// Every model family tpx knows, one file each in plan/families/ (plan/family.hpp says what a
/// family holds). A new family is its file and one entry in `all_families`.

#include <span>
#include <string_view>

#include "tpx/plan/families/deepseek_v2.hpp"
#include "tpx/plan/families/deepseek_v3.hpp"
#include "tpx/plan/families/gemma2.hpp"
#include "tpx/plan/families/gpt_oss.hpp"
#include "tpx/plan/families/llama.hpp"
#include "tpx/plan/families/mistral.hpp"
#include "tpx/plan/families/mixtral.hpp"
#include "tpx/plan/families/phi3.hpp"
#include "tpx/plan/families/qwen2.hpp"
#include "tpx/plan/families/qwen2_moe.hpp"
#include "tpx/plan/families/qwen3.hpp"
#include "tpx/plan/families/qwen3_moe.hpp"
#include "tpx/plan/family.hpp"

namespace tpx::inline v0::plan {

inline constexpr model_family all_families[] = {
    families::llama,       families::mistral, families::qwen2,     families::qwen3,
    families::gemma2,      families::phi3,    families::mixtral,   families::qwen3_moe,
    families::deepseek_v3, families::gpt_oss, families::qwen2_moe, families::deepseek_v2,
};

/// The family of `model_type`, or nullptr.
inline const model_family* find_family(std::string_view model_type) {
  for (const model_family& f : all_families)
    if (f.model_type == model_type) return &f;
  return nullptr;
}

}  // namespace tpx::inline v0::plan
