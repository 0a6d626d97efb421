#!/usr/bin/env python3
"""Writes tests/layer/fixtures/mla_reference.json: transformers' own DeepSeek-V3 attention
(DeepseekV3Attention, multi-head latent attention) in float64 on small random weights — its output
y for an input x, and, for the loss sum(y · g), the gradients of x and of every parameter.

Two cases: a q LoRA rank with interleaved RoPE, biases and v_head_dim < qk_head_dim (DeepSeek-V3's
layout), and a full-rank q_proj with rotate_half RoPE and v_head_dim > qk_head_dim. transformers
computes the latents' RMSNorm in float32 even in a float64 model; its module runs here with its
float32 casts read as float64 (tests/hf_float64.py), and RoPE's cos / sin are computed in float64
and passed in. Attention is torch's SDPA in float64 (causal).

Not run by the tests or CI (they read the committed file). Needs torch and transformers 5.25:
  python3 -m venv /tmp/hf && /tmp/hf/bin/pip install torch==2.15.0 transformers==5.25.0
  /tmp/hf/bin/python tests/layer/make_mla_reference.py tests/layer/fixtures/mla_reference.json
"""

import os
import sys

import torch
import transformers

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from hf_float64 import float64_module, tensor_json, write_fixture  # noqa: E402

ds = float64_module("transformers.models.deepseek_v3.modeling_deepseek_v3")
from transformers.models.deepseek_v3.configuration_deepseek_v3 import DeepseekV3Config  # noqa: E402

CASES = [
    {"name": "q_lora_interleave", "hidden_size": 24, "num_attention_heads": 4, "q_lora_rank": 12,
     "kv_lora_rank": 10, "qk_nope_head_dim": 6, "qk_rope_head_dim": 4, "v_head_dim": 5,
     "rope_interleave": True, "attention_bias": True, "rope_theta": 10000.0, "tokens": 7},
    {"name": "full_q_rotate_half", "hidden_size": 20, "num_attention_heads": 5,
     "q_lora_rank": None, "kv_lora_rank": 8, "qk_nope_head_dim": 4, "qk_rope_head_dim": 6,
     "v_head_dim": 12, "rope_interleave": False, "attention_bias": False, "rope_theta": 500.0,
     "tokens": 6},
]


cases = []
for seed, case in enumerate(CASES):
    torch.manual_seed(100 + seed)
    cfg = DeepseekV3Config(
        hidden_size=case["hidden_size"], num_attention_heads=case["num_attention_heads"],
        num_key_value_heads=case["num_attention_heads"], q_lora_rank=case["q_lora_rank"],
        kv_lora_rank=case["kv_lora_rank"], qk_nope_head_dim=case["qk_nope_head_dim"],
        qk_rope_head_dim=case["qk_rope_head_dim"], v_head_dim=case["v_head_dim"],
        rope_interleave=case["rope_interleave"], attention_bias=case["attention_bias"],
        rope_parameters={"rope_type": "default", "rope_theta": case["rope_theta"]},
        num_hidden_layers=1)
    cfg._attn_implementation = "sdpa"
    attn = ds.DeepseekV3Attention(cfg, layer_idx=0).to(torch.float64)
    with torch.no_grad():
        for name, p in attn.named_parameters():
            if "layernorm" in name:
                p.copy_(1 + 0.2 * torch.randn_like(p))
            else:
                p.copy_(0.3 * torch.randn_like(p))
    n, r = case["tokens"], case["qk_rope_head_dim"]
    x = torch.randn(1, n, case["hidden_size"], dtype=torch.float64, requires_grad=True)
    g = torch.randn(1, n, case["hidden_size"], dtype=torch.float64)
    inv_freq = 1.0 / (case["rope_theta"] ** (torch.arange(0, r, 2, dtype=torch.float64) / r))
    freqs = torch.arange(n, dtype=torch.float64)[:, None] * inv_freq[None, :]
    emb = torch.cat((freqs, freqs), dim=-1)[None]
    y = attn(x, (emb.cos(), emb.sin()), None)[0]
    (y * g).sum().backward()
    tensors = {"x": tensor_json(x[0]), "g": tensor_json(g[0]), "y": tensor_json(y[0]),
               "dx": tensor_json(x.grad[0])}
    for name, p in attn.named_parameters():
        tensors[name] = tensor_json(p)
        tensors["grad." + name] = tensor_json(p.grad)
    cases.append({"config": case, "tensors": tensors})

write_fixture(sys.argv[1], {"cases": cases})
print(f"{len(cases)} cases written with transformers {transformers.__version__}")
