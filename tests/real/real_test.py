#!/usr/bin/env python3
"""The `real` suite: a real pretrained model, text in and text out. Fetches and converts
SmolLM2-135M-Instruct as tools/real-model does (exit 77, a skip, when it cannot: no network),
then checks tpx-run against what transformers 5.25 computed (reference.json, logits.safetensors,
written by make_real_reference.py):

  - at every tp the heads allow (9 query / 3 KV heads: tp 1 … 9), the two chat prompts, as text
    through the model's tokenizer.json and generated as one batch, give transformers' greedy ids
    and text;
  - at tp 1 the last prompt position's logits are within 1e-5 (relative to the largest) of
    transformers' float64 ones in f32, and within 1e-10 in f64;
  - the prompts' ids equal transformers' tokenizer's, and the streamed text equals the decoded one;
  - tpx's tokenizer, on the model's tokenizer.json, gives `tokenizers`' ids and decoded texts on
    every text of the tokenizer corpus (tokenizer_expected.json; test-text's skipped case).

usage: real_test.py TOOLS/REAL-MODEL TPX-RUN REFERENCE_DIR [TEST-TEXT TEXT_FIXTURES]
"""

import json
import os
import struct
import subprocess
import sys
import tempfile

real_model, tpx_run, ref_dir = sys.argv[1:4]
test_text = sys.argv[4:6]
ref = json.load(open(os.path.join(ref_dir, "reference.json")))
failures = []


def check(ok, what):
    print(("ok      " if ok else "FAILED  ") + what, flush=True)
    if not ok:
        failures.append(what)


def read_logits(path):
    """A safetensors file's 'logits' tensor: (shape, flat values), float32 or float64."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        t = header["logits"]
        begin, end = t["data_offsets"]
        f.seek(8 + n + begin)
        data = f.read(end - begin)
    code = {"F32": "f", "F64": "d"}[t["dtype"]]
    return t["shape"], struct.unpack(f"<{len(data) // struct.calcsize(code)}{code}", data)


got = subprocess.run([real_model], capture_output=True, text=True)
if got.returncode != 0:
    print("real: tools/real-model could not make the model (no network?); skipped\n" + got.stderr)
    sys.exit(77)
model = got.stdout.strip().splitlines()[-1]


def run(*args):
    p = subprocess.run([tpx_run, model, *args], capture_output=True, text=True, timeout=600)
    if p.returncode != 0:
        check(False, f"tpx-run {' '.join(args)}: exit {p.returncode}: {p.stderr.strip()}")
    return p


cases = ref["cases"]
new = str(ref["max_new_tokens"])
with tempfile.TemporaryDirectory() as tmp:
    prompts = os.path.join(tmp, "prompts.json")
    json.dump([c["prompt"] for c in cases], open(prompts, "w"))
    for tp in range(1, 10):
        p = run("--tp", str(tp), "--prompts-file", prompts, "--generate", new, "--json")
        if p.returncode != 0:
            continue
        j = json.loads(p.stdout)
        check(j["prompt_ids"] == [c["prompt_ids"] for c in cases],
              f"tp {tp}: the prompts' ids are transformers' tokenizer's")
        for c, ids, text in zip(cases, j["generated"], j["generated_text"]):
            check(ids == c["greedy"] and text == c["text"],
                  f"tp {tp}: '{c['question']}' → {json.dumps(text)} (transformers: "
                  f"{json.dumps(c['text'])})")
    _, want = read_logits(os.path.join(ref_dir, "logits.safetensors"))
    vocab = len(want)
    scale = max(abs(x) for x in want[:vocab])
    for dtype, bound in [("f32", 1e-5), ("f64", 1e-10)]:
        out = os.path.join(tmp, f"logits_{dtype}.safetensors")
        p = run("--prompt", cases[0]["prompt"], "--dtype", dtype, "--logits-out", out)
        if p.returncode != 0:
            continue
        shape, values = read_logits(out)
        last = values[(shape[0] - 1) * vocab:]
        worst = max(abs(a - b) for a, b in zip(last, want[:vocab])) / scale
        check(shape == [len(cases[0]["prompt_ids"]), vocab] and worst <= bound,
              f"tp 1, {dtype}: the last position's logits within {bound:g} of transformers' "
              f"float64 (relative {worst:.2e})")
    p = run("--tp", "3", "--prompt", cases[0]["prompt"], "--generate", new)
    if p.returncode == 0:
        check(p.stdout.splitlines()[0] == cases[0]["text"],
              f"tp 3: the streamed text is {json.dumps(p.stdout.splitlines()[0])}")

if test_text:
    env = dict(os.environ, TPX_TEXT_FIXTURES=test_text[1],
               TPX_TEXT_TOKENIZER=os.path.join(model, "tokenizer.json"),
               TPX_TEXT_EXPECTED=os.path.join(ref_dir, "tokenizer_expected.json"))
    p = subprocess.run([test_text[0], "--no-skip", "-tc=a downloaded tokenizer*"],
                       capture_output=True, text=True, env=env, timeout=300)
    check(p.returncode == 0 and "1 passed" in p.stdout,
          "the model's tokenizer.json gives tokenizers' ids on the corpus" +
          ("" if p.returncode == 0 else ":\n" + p.stdout[-3000:]))

print(f"real: {len(failures)} failed" if failures else "real: all checks pass")
sys.exit(1 if failures else 0)
