#!/usr/bin/env python3
"""Checks tools/real-model's conversion against transformers' own GGUF loader: the same tensors
(transformers' dequantized float32 weights rounded to bf16 equal model.safetensors' bytes), the
same config values, and the same tokenizer (tokenizer.json equal as JSON to the one transformers
builds from the GGUF, and the same ids on the tokenizer corpus, tests/text/fixtures/corpus.json).

Not run by the tests or CI (transformers' GGUF loader needs torch):
  python3 -m venv /tmp/hf && /tmp/hf/bin/pip install torch==2.15.0 transformers==5.25.0 gguf accelerate
  /tmp/hf/bin/python tests/real/check_conversion.py GGUF_FILE MODEL_DIR
(GGUF_FILE: ~/.cache/tpx/SmolLM2-135M-Instruct.Q4_1.gguf, MODEL_DIR: what tools/real-model printed)
"""

import json
import os
import sys

import torch
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

gguf, model_dir = sys.argv[1], sys.argv[2]
gdir, gname = os.path.dirname(gguf), os.path.basename(gguf)
failed = 0


def check(ok, what):
    global failed
    print(("ok      " if ok else "DIFFERS ") + what)
    failed += not ok


ref = AutoModelForCausalLM.from_pretrained(gdir, gguf_file=gname, dtype=torch.float32)
mine = load_file(os.path.join(model_dir, "model.safetensors"))
sd = {k: v for k, v in ref.state_dict().items() if not (k == "lm_head.weight" and ref.config.tie_word_embeddings)}
check(set(sd) == set(mine), f"tensor names ({len(mine)} in model.safetensors, {len(sd)} in transformers')")
same = [k for k in sd if k in mine and torch.equal(sd[k].to(torch.bfloat16), mine[k])]
check(len(same) == len(sd), f"tensor values: {len(same)} of {len(sd)} equal after bf16 rounding")

cfg = json.load(open(os.path.join(model_dir, "config.json")))
theirs = AutoConfig.from_pretrained(gdir, gguf_file=gname).to_dict()
theta = (theirs.get("rope_parameters") or {}).get("rope_theta", theirs.get("rope_theta"))
for k in ["hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
          "num_key_value_heads", "vocab_size", "rms_norm_eps", "max_position_embeddings",
          "tie_word_embeddings", "bos_token_id", "eos_token_id"]:
    check(cfg.get(k) == theirs.get(k), f"config {k}: {cfg.get(k)} / transformers {theirs.get(k)}")
check(cfg["rope_theta"] == theta, f"config rope_theta: {cfg['rope_theta']} / transformers {theta}")

tok = AutoTokenizer.from_pretrained(gdir, gguf_file=gname)
hf = json.loads(tok.backend_tokenizer.to_str())
written = json.load(open(os.path.join(model_dir, "tokenizer.json")))
check(hf == written, "tokenizer.json equals transformers' GGUF tokenizer as JSON")
from tokenizers import Tokenizer  # noqa: E402
t = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
corpus = json.load(open(os.path.join(os.path.dirname(__file__), "..", "text", "fixtures", "corpus.json")))
texts = [bytes.fromhex(h).decode("utf-8", "replace") for h in corpus["texts"]]
agree = sum(t.encode(x).ids == tok(x)["input_ids"] for x in texts)
check(agree == len(texts), f"token ids on the corpus: {agree} of {len(texts)} texts equal")
sys.exit(1 if failed else 0)
