#!/usr/bin/env python3
"""Writes the tiny transformers models under tests/model/fixtures/hf-ref/ that the model suite
checks tpx against, beside the hf-tiny ones of shared/fixtures: each a directory with config.json
and model.safetensors as transformers' save_pretrained writes them (float32), prompt.json (the
prompt and transformers' greedy continuation) and reference.safetensors (`logits` [T, vocab],
transformers' forward in float64).

transformers computes RoPE frequencies, RMSNorm and the eager softmax in float32 even in a float64
model; this script runs transformers' own modeling code with those float32 casts rewritten to
float64 (tests/hf_float64.py), so the reference is transformers' arithmetic at float64 throughout.

Not run by the tests or CI (they read the committed files). Needs torch and transformers; the
committed files were written with 5.24, and 5.25 writes the same weights, greedy ids and logits
(to 6e-16 relative, December 2026); the deepseek and later cases were written with 5.25:
  python3 -m venv /tmp/hf && /tmp/hf/bin/pip install torch==2.15.0 transformers==5.24.0
  /tmp/hf/bin/python tests/model/make_reference.py tests/model/fixtures/hf-ref [CASE …]
"""

import importlib
import json
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from hf_float64 import float64_module  # noqa: E402

OUT = sys.argv[1]
PROMPT = [5, 1, 33, 8, 60, 14, 2]


float64_module("transformers.modeling_rope_utils")

CASES = {
    # q/k/v biases, tied embeddings.
    "qwen2": ("qwen2", "Qwen2ForCausalLM", "Qwen2Config", dict(
        hidden_size=32, intermediate_size=20, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=97, tie_word_embeddings=True)),
    # fused qkv_proj and gate_up_proj in the checkpoint.
    "phi3": ("phi3", "Phi3ForCausalLM", "Phi3Config", dict(
        hidden_size=32, intermediate_size=20, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=97, pad_token_id=0, eos_token_id=2)),
    # sliding_window 4096 (longer than the prompt).
    "mistral": ("mistral", "MistralForCausalLM", "MistralConfig", dict(
        hidden_size=32, intermediate_size=20, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=97)),
    # llama3 RoPE, q/k/v/o and MLP biases, one KV head (replicated at every tp > 1), head_dim
    # other than hidden / heads.
    "llama3": ("llama", "LlamaForCausalLM", "LlamaConfig", dict(
        hidden_size=40, head_dim=8, intermediate_size=22, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=1, vocab_size=97, attention_bias=True,
        mlp_bias=True, rope_parameters=dict(rope_type="llama3", rope_theta=10000.0, factor=8.0,
                                            low_freq_factor=1.0, high_freq_factor=4.0,
                                            original_max_position_embeddings=16))),
    # q/k RMSNorm per head.
    "qwen3": ("qwen3", "Qwen3ForCausalLM", "Qwen3Config", dict(
        hidden_size=32, head_dim=8, intermediate_size=20, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, vocab_size=97)),
    # q/k norms, experts (softmax top-2 of 6, not renormalised) and a dense layer between.
    "qwen3_moe": ("qwen3_moe", "Qwen3MoeForCausalLM", "Qwen3MoeConfig", dict(
        hidden_size=32, intermediate_size=20, moe_intermediate_size=12, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=2, vocab_size=97, num_experts=6,
        num_experts_per_tok=2, norm_topk_prob=False, mlp_only_layers=[1])),
    # A sliding window of 3 on every layer (Mistral ignores layer_types): the 7-token prompt and
    # its continuation see only the last 3 positions.
    "mistral_window": ("mistral", "MistralForCausalLM", "MistralConfig", dict(
        hidden_size=32, intermediate_size=20, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=97, sliding_window=3)),
    # Qwen2's window on the layers from max_window_layers on: layer 0 full, layer 1 a window of 3.
    "qwen2_window": ("qwen2", "Qwen2ForCausalLM", "Qwen2Config", dict(
        hidden_size=32, intermediate_size=20, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=97, use_sliding_window=True, sliding_window=3,
        max_window_layers=1)),
    # Qwen2-MoE: q/k/v biases, experts (softmax top-2 of 6, renormalised) beside a shared
    # expert scaled by σ(x · shared_expert_gate), a dense layer between two MoE layers.
    "qwen2_moe": ("qwen2_moe", "Qwen2MoeForCausalLM", "Qwen2MoeConfig", dict(
        hidden_size=32, intermediate_size=20, moe_intermediate_size=12,
        shared_expert_intermediate_size=16, num_hidden_layers=3, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=97, num_experts=6, num_experts_per_tok=2,
        norm_topk_prob=True, mlp_only_layers=[1])),
    # DeepSeek-V3: MLA with a q LoRA rank, interleaved RoPE and v_head_dim 8 ≠ qk_head_dim 10; a
    # dense first layer, then sigmoid routing with a selection bias, 3 groups of 2 experts of which
    # the best 2 groups are kept, weights renormalised and scaled by 2.5, and a shared expert.
    "deepseek_v3": ("deepseek_v3", "DeepseekV3ForCausalLM", "DeepseekV3Config", dict(
        hidden_size=32, intermediate_size=20, moe_intermediate_size=12, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=4, vocab_size=97, q_lora_rank=12,
        kv_lora_rank=10, qk_nope_head_dim=6, qk_rope_head_dim=4, v_head_dim=8,
        n_routed_experts=6, num_experts_per_tok=2, n_group=3, topk_group=2, n_shared_experts=1,
        first_k_dense_replace=1, routed_scaling_factor=2.5, norm_topk_prob=True)),
    # DeepSeek-V3 with a full-rank q_proj, attention biases (q_a is absent: kv_a and o), RoPE
    # not interleaved, two shared experts, no groups and the top-k weights not renormalised.
    "deepseek_v3_q_full": ("deepseek_v3", "DeepseekV3ForCausalLM", "DeepseekV3Config", dict(
        hidden_size=32, intermediate_size=20, moe_intermediate_size=12, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=4, vocab_size=97, q_lora_rank=None,
        kv_lora_rank=10, qk_nope_head_dim=6, qk_rope_head_dim=4, v_head_dim=8,
        n_routed_experts=6, num_experts_per_tok=2, n_group=1, topk_group=1, n_shared_experts=2,
        first_k_dense_replace=1, routed_scaling_factor=1.5, norm_topk_prob=False,
        rope_interleave=False, attention_bias=True)),
    # DeepSeek-V3's YaRN RoPE: frequencies past an original context of 8 interpolated by 4, cos
    # and sin times mscale(4, 1) / mscale(4, 0.5) and the softmax scale times mscale(4, 0.5)².
    "deepseek_v3_yarn": ("deepseek_v3", "DeepseekV3ForCausalLM", "DeepseekV3Config", dict(
        hidden_size=32, intermediate_size=20, moe_intermediate_size=12, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=4, vocab_size=97, q_lora_rank=12,
        kv_lora_rank=10, qk_nope_head_dim=6, qk_rope_head_dim=8, v_head_dim=8,
        n_routed_experts=6, num_experts_per_tok=2, n_group=3, topk_group=2, n_shared_experts=1,
        first_k_dense_replace=1, max_position_embeddings=32,
        rope_parameters=dict(rope_type="yarn", rope_theta=10000.0, factor=4.0, mscale=1.0,
                             mscale_all_dim=0.5, original_max_position_embeddings=8))),
    # YaRN on a GQA model: the attention factor 0.1 ln 4 + 1 on cos and sin, no softmax change.
    "llama_yarn": ("llama", "LlamaForCausalLM", "LlamaConfig", dict(
        hidden_size=32, intermediate_size=20, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=97, max_position_embeddings=32,
        rope_parameters=dict(rope_type="yarn", rope_theta=10000.0, factor=4.0,
                             original_max_position_embeddings=8))),
    # DeepSeek-V2: MLA with a q LoRA rank (RoPE on complex pairs: interleaved), a dense first
    # layer, softmax routing limited to the 2 best of 3 groups by each group's best score, the
    # weights not renormalised and scaled by 2.0, and a shared expert.
    "deepseek_v2": ("deepseek_v2", "DeepseekV2ForCausalLM", "DeepseekV2Config", dict(
        hidden_size=32, intermediate_size=20, moe_intermediate_size=12, num_hidden_layers=3,
        num_attention_heads=4, vocab_size=97, q_lora_rank=12, kv_lora_rank=10,
        qk_nope_head_dim=6, qk_rope_head_dim=4, v_head_dim=8, n_routed_experts=6,
        num_experts_per_tok=2, topk_method="group_limited_greedy", n_group=3, topk_group=2,
        n_shared_experts=1, first_k_dense_replace=1, routed_scaling_factor=2.0)),
    # DeepSeek-V2-Lite's shape: a full-rank q_proj, plain greedy softmax top-2, two shared
    # experts, attention biases (kv_a and o).
    "deepseek_v2_lite": ("deepseek_v2", "DeepseekV2ForCausalLM", "DeepseekV2Config", dict(
        hidden_size=32, intermediate_size=20, moe_intermediate_size=12, num_hidden_layers=2,
        num_attention_heads=4, vocab_size=97, q_lora_rank=None, kv_lora_rank=10,
        qk_nope_head_dim=6, qk_rope_head_dim=4, v_head_dim=8, n_routed_experts=6,
        num_experts_per_tok=2, topk_method="greedy", n_shared_experts=2, first_k_dense_replace=1,
        routed_scaling_factor=1.0, attention_bias=True)),
}
ONLY = set(sys.argv[2:])  # case names to write (default: every case)

for case, (family, model_class, config_class, kwargs) in CASES.items():
    if ONLY and case not in ONLY:
        continue
    mod = float64_module(f"transformers.models.{family}.modeling_{family}")
    cfg_mod = importlib.import_module(f"transformers.models.{family}.configuration_{family}")
    config = getattr(cfg_mod, config_class)(**kwargs)
    config._attn_implementation = "eager"
    config._experts_implementation = "eager"  # the expert loop (grouped kernels have no float64)
    torch.manual_seed(1000 + list(CASES).index(case))
    model = getattr(mod, model_class)(config).to(torch.float32).eval()
    with torch.no_grad():  # biases and norm weights start at 0 and 1: make them count
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.1)
            elif "norm" in name:
                p.copy_(1 + 0.1 * torch.randn_like(p))
            elif p.abs().max() == 0:  # routers start at zero: every expert would tie
                p.normal_(0, 0.5)
        for name, b in model.named_buffers():  # DeepSeek's selection bias starts at zero too
            if name.endswith("e_score_correction_bias"):
                b.normal_(0, 0.1)
    d = os.path.join(OUT, case)
    os.makedirs(d, exist_ok=True)
    model.save_pretrained(d)
    # The reference runs the checkpoint as written, loaded in float64 (buffers such as RoPE's
    # frequencies are recomputed at float64, not cast back from the float32 model).
    model = getattr(mod, model_class).from_pretrained(
        d, attn_implementation="eager", experts_implementation="eager", dtype=torch.float64).eval()
    ids = torch.tensor([PROMPT])
    with torch.no_grad():
        logits = model(ids).logits[0]
        seq = list(PROMPT)
        for _ in range(6):  # greedy, the whole prefix each step, no EOS stop
            seq.append(int(model(torch.tensor([seq])).logits[0, -1].argmax()))
    from safetensors.torch import save_file
    save_file({"logits": logits.contiguous()}, os.path.join(d, "reference.safetensors"))
    json.dump({"ids": PROMPT, "greedy": seq[len(PROMPT):]}, open(os.path.join(d, "prompt.json"), "w"))
    print(case, "greedy", seq[len(PROMPT):])
