#!/usr/bin/env python3
"""Writes tests/layer/fixtures/qwen2_moe_reference.json: transformers' own Qwen2-MoE block
(Qwen2MoeSparseMoeBlock: the softmax top-k router, norm_topk_prob, the routed experts, and the
shared expert scaled per token by the sigmoid of its `shared_expert_gate`) in float64 on small
random weights — its output y for an input x and, for the loss sum(y · g), the gradients of x and
of every parameter.

The module runs with its float32 casts read as float64 (tests/hf_float64.py).

Not run by the tests or CI (they read the committed file). Needs torch and transformers 5.25:
  /tmp/hf/bin/python tests/layer/make_qwen2_moe_reference.py \\
      tests/layer/fixtures/qwen2_moe_reference.json
"""

import os
import sys

import torch
import transformers

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from hf_float64 import float64_module, tensor_json, write_fixture  # noqa: E402

qm = float64_module("transformers.models.qwen2_moe.modeling_qwen2_moe")
from transformers.models.qwen2_moe.configuration_qwen2_moe import Qwen2MoeConfig  # noqa: E402

CASE = {"hidden_size": 12, "moe_intermediate_size": 5, "num_experts": 8,
        "num_experts_per_tok": 3, "shared_expert_intermediate_size": 7, "norm_topk_prob": True,
        "tokens": 10}

torch.manual_seed(400)
cfg = Qwen2MoeConfig(hidden_size=CASE["hidden_size"],
                     moe_intermediate_size=CASE["moe_intermediate_size"],
                     num_experts=CASE["num_experts"],
                     num_experts_per_tok=CASE["num_experts_per_tok"],
                     shared_expert_intermediate_size=CASE["shared_expert_intermediate_size"],
                     norm_topk_prob=CASE["norm_topk_prob"])
cfg._experts_implementation = "eager"  # the expert loop (grouped kernels have no float64)
moe = qm.Qwen2MoeSparseMoeBlock(cfg).to(torch.float64)
with torch.no_grad():
    for name, p in moe.named_parameters():
        p.copy_((0.5 if name in ("gate.weight", "shared_expert_gate.weight") else 0.3)
                * torch.randn_like(p))
x = torch.randn(1, CASE["tokens"], CASE["hidden_size"], dtype=torch.float64, requires_grad=True)
g = torch.randn(1, CASE["tokens"], CASE["hidden_size"], dtype=torch.float64)
y = moe(x)
(y * g).sum().backward()


tensors = {"x": tensor_json(x[0]), "g": tensor_json(g[0]), "y": tensor_json(y[0]),
           "dx": tensor_json(x.grad[0])}
for name, p in moe.named_parameters():
    tensors[name] = tensor_json(p)
    tensors["grad." + name] = tensor_json(p.grad)
write_fixture(sys.argv[1], {"config": CASE, "tensors": tensors})
print("written with transformers", transformers.__version__, sorted(tensors))
