#!/usr/bin/env python3
"""Writes tests/layer/fixtures/deepseek_moe_reference.json: transformers' own DeepSeek-V3 MoE
block (DeepseekV3MoE: the sigmoid router with e_score_correction_bias and group-limited top-k,
norm_topk_prob, routed_scaling_factor, the routed experts and the shared experts) in float64 on
small random weights — its output y for an input x and, for the loss sum(y · g), the gradients of
x and of every parameter.

transformers' DeepSeek-V3 module computes its router logits (and its norms) in float32 even in a
float64 model; here the module runs with its float32 casts read as float64 (tests/hf_float64.py).

Not run by the tests or CI (they read the committed file). Needs torch and transformers 5.25:
  /tmp/hf/bin/python tests/layer/make_deepseek_moe_reference.py \\
      tests/layer/fixtures/deepseek_moe_reference.json
"""

import os
import sys

import torch
import transformers

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from hf_float64 import float64_module, tensor_json, write_fixture  # noqa: E402

ds = float64_module("transformers.models.deepseek_v3.modeling_deepseek_v3")
from transformers.models.deepseek_v3.configuration_deepseek_v3 import DeepseekV3Config  # noqa: E402

CASE = {"hidden_size": 12, "moe_intermediate_size": 5, "n_routed_experts": 8, "n_group": 4,
        "topk_group": 2, "num_experts_per_tok": 3, "n_shared_experts": 2, "norm_topk_prob": True,
        "routed_scaling_factor": 2.5, "tokens": 10}

torch.manual_seed(300)
cfg = DeepseekV3Config(hidden_size=CASE["hidden_size"],
                       moe_intermediate_size=CASE["moe_intermediate_size"],
                       n_routed_experts=CASE["n_routed_experts"], n_group=CASE["n_group"],
                       topk_group=CASE["topk_group"],
                       num_experts_per_tok=CASE["num_experts_per_tok"],
                       n_shared_experts=CASE["n_shared_experts"],
                       norm_topk_prob=CASE["norm_topk_prob"],
                       routed_scaling_factor=CASE["routed_scaling_factor"])
moe = ds.DeepseekV3MoE(cfg).to(torch.float64)
with torch.no_grad():
    for name, p in moe.named_parameters():
        p.copy_((0.5 if name == "gate.weight" else 0.3) * torch.randn_like(p))
    moe.gate.e_score_correction_bias.copy_(0.3 * torch.randn_like(moe.gate.e_score_correction_bias))
x = torch.randn(1, CASE["tokens"], CASE["hidden_size"], dtype=torch.float64, requires_grad=True)
g = torch.randn(1, CASE["tokens"], CASE["hidden_size"], dtype=torch.float64)
y = moe(x)
(y * g).sum().backward()


tensors = {"x": tensor_json(x[0]), "g": tensor_json(g[0]), "y": tensor_json(y[0]),
           "dx": tensor_json(x.grad[0]),
           "gate.e_score_correction_bias": tensor_json(moe.gate.e_score_correction_bias)}
for name, p in moe.named_parameters():
    tensors[name] = tensor_json(p)
    tensors["grad." + name] = tensor_json(p.grad)
write_fixture(sys.argv[1], {"config": CASE, "tensors": tensors})
print("written with transformers", transformers.__version__, sorted(tensors))
