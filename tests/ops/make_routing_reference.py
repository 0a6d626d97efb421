#!/usr/bin/env python3
"""Writes tests/ops/fixtures/deepseek_routing.json: transformers' own DeepSeek-V3 router
(DeepseekV3TopkRouter) on random tokens — sigmoid scores, e_score_correction_bias for selection
only, group-limited top-k (n_group, topk_group), norm_topk_prob, routed_scaling_factor — its
chosen expert ids and their weights.

The router computes its logits in float32 (`F.linear` on `.type(torch.float32)`); its module runs
here with those casts read as float64 (tests/hf_float64.py). Its weight is the identity, so the
logits it routes are exactly the inputs written out, and its weights are float64.

Not run by the tests or CI (they read the committed file). Needs torch and transformers 5.25:
  /tmp/hf/bin/python tests/ops/make_routing_reference.py tests/ops/fixtures/deepseek_routing.json
"""

import os
import sys

import torch
import transformers

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from hf_float64 import float64_module, write_fixture  # noqa: E402

ds = float64_module("transformers.models.deepseek_v3.modeling_deepseek_v3")
from transformers.models.deepseek_v3.configuration_deepseek_v3 import DeepseekV3Config  # noqa: E402

CASES = [
    {"name": "group_limited", "n_routed_experts": 16, "n_group": 4, "topk_group": 2,
     "num_experts_per_tok": 4, "norm_topk_prob": True, "routed_scaling_factor": 2.5, "tokens": 40},
    {"name": "one_group", "n_routed_experts": 8, "n_group": 1, "topk_group": 1,
     "num_experts_per_tok": 3, "norm_topk_prob": False, "routed_scaling_factor": 1.0, "tokens": 24},
]

cases = []
for seed, case in enumerate(CASES):
    torch.manual_seed(200 + seed)
    e = case["n_routed_experts"]
    cfg = DeepseekV3Config(hidden_size=e, n_routed_experts=e, n_group=case["n_group"],
                           topk_group=case["topk_group"],
                           num_experts_per_tok=case["num_experts_per_tok"],
                           norm_topk_prob=case["norm_topk_prob"],
                           routed_scaling_factor=case["routed_scaling_factor"])
    router = ds.DeepseekV3TopkRouter(cfg).to(torch.float64)
    with torch.no_grad():
        router.weight.copy_(torch.eye(e))
        router.e_score_correction_bias.copy_(0.5 * torch.randn(e))
    logits = 2 * torch.randn(case["tokens"], e, dtype=torch.float64)
    with torch.no_grad():
        routed, weights, ids = router(logits)
    assert torch.equal(routed, logits)
    cases.append({
        "config": case,
        "logits": logits.to(torch.float64).tolist(),
        "bias": router.e_score_correction_bias.to(torch.float64).tolist(),
        "ids": ids.tolist(),
        "weights": weights.to(torch.float64).tolist()})

write_fixture(sys.argv[1], {"cases": cases})
print(f"{len(cases)} cases written with transformers {transformers.__version__}")
