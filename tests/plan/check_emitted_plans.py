#!/usr/bin/env python3
"""Checks that transformers (5.24, 5.25) loads the plans `tpx-plan --emit-hf-plan` prints for every
preset: for each model type, a four-layer default config is written as config.json, tpx-plan
emits the preset's plan, and transformers' own plan resolution (PreTrainedModel
._resolve_parallel_plans, which validates the style strings, the EP rules and the keys against
the model's modules and parameters) takes it for a model built on the meta device, at tp 2 and,
for the MoE presets, ep 2. Prints one line per model type; exit 1 if transformers refuses one or a
key names nothing in its model.

Not run by the tests or CI (it needs torch and transformers, see make_hf_corpus.py):
  /tmp/hf/bin/python tests/plan/check_emitted_plans.py build/tools/tpx-plan
"""

import json
import os
import subprocess
import sys
import tempfile
import warnings

import torch
import transformers
from transformers import AutoConfig, AutoModelForCausalLM
from transformers.distributed.configuration_utils import DistributedConfig

warnings.filterwarnings("ignore")
transformers.logging.set_verbosity_error()
tool = sys.argv[1]
failed = 0
for model_type in ["llama", "mistral", "qwen2", "qwen3", "gemma2", "phi3", "mixtral", "qwen3_moe",
                   "deepseek_v3", "gpt_oss", "qwen2_moe", "deepseek_v2"]:
    cfg = AutoConfig.for_model(model_type, num_hidden_layers=4)  # DeepSeek: 3 dense, 1 MoE
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "config.json")
        d = cfg.to_dict()
        d["architectures"] = [AutoModelForCausalLM._model_mapping[type(cfg)].__name__]
        json.dump(d, open(path, "w"), default=str)
        p = subprocess.run([tool, "--config", path, "--emit-hf-plan"], capture_output=True,
                           text=True)
    if p.returncode != 0:
        print(f"{model_type}: tpx-plan failed: {p.stderr.strip()}")
        failed += 1
        continue
    plan = json.loads(p.stdout)
    cfg.base_model_tp_plan = plan.get("base_model_tp_plan", {})
    cfg.base_model_ep_plan = plan.get("base_model_ep_plan", None)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(cfg)
    names = {transformers.distributed.parallel_utils.replace_layer_number_by_wildcard(n)
             for n, _ in list(model.named_modules()) + list(model.named_parameters())}
    base = model.base_model_prefix + "."
    keys = [base + k for k in plan.get("base_model_tp_plan", {})] + list(plan.get("lm_tp_plan", {}))
    keys += [base + k for k in plan.get("base_model_ep_plan", {})]
    unknown = sorted(k for k in keys if k not in names)
    ep = 2 if "base_model_ep_plan" in plan else 1
    try:
        tp_plan, ep_plan, _ = model._resolve_parallel_plans(DistributedConfig(tp_size=2, ep_size=ep))
        verdict = f"accepted at tp 2, ep {ep}: {len(tp_plan)} TP and {len(ep_plan)} EP entries"
    except Exception as e:  # noqa: BLE001 — the refusal is the result
        verdict = f"REFUSED: {type(e).__name__}: {e}"
        failed += 1
    if unknown:
        verdict += f"; keys naming nothing: {unknown}"
        failed += 1
    print(f"{model_type}: {verdict}")
sys.exit(1 if failed else 0)
