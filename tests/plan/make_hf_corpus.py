#!/usr/bin/env python3
"""Writes tests/plan/fixtures/hf_5_2X_corpus.json: every parallel plan the installed transformers
ships, as its config classes (`base_model_tp_plan`, `base_model_ep_plan`) and causal-LM classes
(`_tp_plan`, as `lm_tp_plan`) hold them, and, for each model type whose default config builds,
the model's dims (its config class's defaults, two layers), its parameters' in-memory names
and shapes (the names transformers' plans key), read from a model built on the meta device, and
the style transformers' effective plans give each parameter.

Not run by the tests or CI (they read the committed files). Needs torch and transformers; the
committed corpora were written with 5.24.0 and 5.25.0 (torch 2.15.0):
  python3 -m venv /tmp/hf && /tmp/hf/bin/pip install torch==2.15.0 transformers==5.25.0
  /tmp/hf/bin/python tests/plan/make_hf_corpus.py tests/plan/fixtures/hf_5_25_corpus.json
"""

import json
import sys
import warnings

import torch
import transformers
from transformers import AutoModel, AutoModelForCausalLM
from transformers.models.auto.configuration_auto import CONFIG_MAPPING

warnings.filterwarnings("ignore")
transformers.logging.set_verbosity_error()

# The config.json keys tpx's plan reads (plan/model_config.hpp).
KEYS = ["hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
        "head_dim", "intermediate_size", "num_local_experts", "num_experts", "n_routed_experts",
        "moe_intermediate_size", "num_experts_per_tok", "experts_per_token", "n_shared_experts",
        "first_k_dense_replace", "decoder_sparse_step", "mlp_only_layers", "q_lora_rank",
        "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim", "vocab_size",
        "tie_word_embeddings"]
MAX_TENSORS = 600  # multimodal models with whole vision towers are left without tensors


def build(cls):
    cfg = cls()
    if hasattr(cfg, "num_hidden_layers"):
        cfg.num_hidden_layers = 2
    for k in ("layer_types", "mlp_layer_types"):
        if isinstance(getattr(cfg, k, None), list):
            setattr(cfg, k, getattr(cfg, k)[:2])
    error = None
    with torch.device("meta"):
        for auto in (AutoModelForCausalLM, AutoModel):
            try:
                return cfg, auto.from_config(cfg)
            except Exception as e:  # noqa: BLE001 — the reason is recorded
                error = e
    raise error


models, not_built = {}, {}
for model_type, cls in CONFIG_MAPPING.items():
    plans = {k: dict(getattr(cls, k)) for k in ("base_model_tp_plan", "base_model_ep_plan")
             if getattr(cls, k, None)}
    if not plans:
        continue
    entry = dict(plans)
    try:
        cfg, model = build(cls)
    except Exception as e:  # noqa: BLE001
        not_built[model_type] = f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"
        models[model_type] = entry
        continue
    lm = getattr(type(model), "_tp_plan", None)
    if lm and type(model).__name__.endswith("ForCausalLM"):
        entry["lm_tp_plan"] = dict(lm)
    d = cfg.to_dict()
    c = {k: d[k] for k in KEYS if k in d}
    for k in KEYS:  # attributes the class derives (head_dim, …)
        v = getattr(cfg, k, None) if k not in c else None
        if isinstance(v, (int, bool, list)):
            c[k] = v
    c["model_type"] = model_type
    c["architectures"] = [type(model).__name__]
    entry["config"] = c
    tensors = [[n, list(p.shape)] for n, p in model.named_parameters()]
    if len(tensors) <= MAX_TENSORS:
        entry["tensors"] = tensors
        # transformers' own decision per parameter: its effective plans (embedding rule
        # prepended, base-model prefix applied) expanded over the model's parameters.
        params = {n for n, _ in tensors}
        for kind, plan in (("tp", model.tp_plan), ("ep", model.ep_plan)):
            if plan:
                expanded = model._expand_parallel_plan(dict(plan))
                entry[f"transformers_{kind}_styles"] = {
                    n: st for n, st in expanded.items() if n in params}
    else:
        not_built[model_type] = f"{len(tensors)} parameters (a multimodal model); plans only"
    models[model_type] = entry

doc = {
    "_about": "Parallel plans of every model type transformers (the version below) ships a plan "
              "for (config "
              "class base_model_tp_plan / base_model_ep_plan; lm_tp_plan = the causal-LM class's "
              "_tp_plan), with the default config's dims at two layers and the in-memory "
              "parameter names and shapes of the model built from it (meta device), and the "
              "style transformers' effective TP / EP plan gives each parameter "
              "(transformers_tp_styles, transformers_ep_styles: model.tp_plan / ep_plan "
              "expanded by model._expand_parallel_plan). Written by "
              "tests/plan/make_hf_corpus.py; not_built says why a type has plans only.",
    "transformers": transformers.__version__,
    "models": models,
    "not_built": not_built,
}
with open(sys.argv[1], "w") as f:
    json.dump(doc, f, separators=(",", ":"), sort_keys=True)
print(f"{len(models)} model types with plans; {len(models) - len(not_built)} with tensors")
