#!/usr/bin/env python3
"""Writes tests/real/reference.json and tests/real/logits.safetensors, what the `real` suite
checks tpx against: transformers 5.25 running the model directory tools/real-model writes
(SmolLM2-135M-Instruct) — its own modeling code at float64 throughout (tests/hf_float64.py) — on
two chat prompts formatted by the model's chat template (tokenizer_config.json): for each the
prompt text and ids, the greedy continuation (up to 32 new tokens, ending at EOS as transformers'
generate does) and its text; and the first prompt's last position's logits (float64, [1, vocab]).

Not run by the tests or CI (needs torch and transformers):
  python3 -m venv /tmp/hf && /tmp/hf/bin/pip install torch==2.15.0 transformers==5.25.0
  /tmp/hf/bin/python tests/real/make_real_reference.py MODEL_DIR
"""

import json
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from hf_float64 import float64_module  # noqa: E402

float64_module("transformers.modeling_rope_utils")
llama = float64_module("transformers.models.llama.modeling_llama")
from transformers import AutoTokenizer  # noqa: E402

QUESTIONS = ["What is the capital of France?", "Name the three primary colors."]
NEW = 32

model_dir = sys.argv[1]
here = os.path.dirname(os.path.abspath(__file__))
tok = AutoTokenizer.from_pretrained(model_dir)
model = llama.LlamaForCausalLM.from_pretrained(model_dir, dtype=torch.float64,
                                               attn_implementation="eager").eval()
eos = model.generation_config.eos_token_id
cases, last = [], []
with torch.no_grad():
    for q in QUESTIONS:
        text = tok.apply_chat_template([{"role": "user", "content": q}], tokenize=False,
                                       add_generation_prompt=True)
        ids = tok(text)["input_ids"]
        logits = model(torch.tensor([ids])).logits[0]
        last.append(logits[-1])
        seq = list(ids)
        for _ in range(NEW):  # greedy, the whole prefix each step
            nxt = int(model(torch.tensor([seq])).logits[0, -1].argmax())
            seq.append(nxt)
            if nxt == eos:
                break
        new = seq[len(ids):]
        cases.append({"question": q, "prompt": text, "prompt_ids": ids, "greedy": new,
                      "text": tok.decode(new, skip_special_tokens=True)})
        print(q, "→", cases[-1]["text"])
import transformers  # noqa: E402
json.dump({"transformers": transformers.__version__, "torch": torch.__version__.split("+")[0],
           "max_new_tokens": NEW, "eos": eos, "cases": cases},
          open(os.path.join(here, "reference.json"), "w"), indent=1, ensure_ascii=False)
from safetensors.torch import save_file  # noqa: E402
# The first prompt's alone, in float64: the test checks tpx's f64 logits to 1e-10.
save_file({"logits": last[0].reshape(1, -1).contiguous()}, os.path.join(here, "logits.safetensors"))
