#!/usr/bin/env python3
"""A Llama decoder layer in transformers and in tpx, side by side in one run, one thread each.

    python3 bench/compare/llama_layer.py BUILD_DIR [ROUNDS]

Needs torch and transformers in the Python that runs it (a venv of your own: the repository and
its tests never need them). The layer is hidden 512, 8 query / 4 KV heads of 64, intermediate
1376, float32; one step is forward + backward at 32 ... 2048 tokens. transformers runs its
LlamaDecoderLayer (SDPA attention, causal); tpx runs `tpx-bench --blocks --tp 1 --json`, whose
layer_floor records time tpx's Llama layer and its GEMMs alone. Rounds alternate the two, and
each number is the median over rounds. Prints a table: both times, tpx / transformers, and tpx's
layer / its GEMMs.
"""
import json
import os
import statistics
import subprocess
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import LlamaConfig  # noqa: E402
from transformers.models.llama.modeling_llama import (  # noqa: E402
    LlamaDecoderLayer,
    LlamaRotaryEmbedding,
)

TOKENS = [32, 128, 512, 1024, 2048]


def transformers_step_seconds(tokens, reps):
    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=512, intermediate_size=1376, num_attention_heads=8,
                      num_key_value_heads=4, head_dim=64, rms_norm_eps=1e-6)
    cfg._attn_implementation = "sdpa"
    layer = LlamaDecoderLayer(cfg, 0)
    rotary = LlamaRotaryEmbedding(cfg)
    x = (torch.randn(1, tokens, 512) * 0.5).requires_grad_(True)
    pos = torch.arange(tokens)[None]

    def step():
        pe = rotary(x, pos)
        y = layer(x, position_embeddings=pe, position_ids=pos, attention_mask=None)
        y = y[0] if isinstance(y, tuple) else y
        y.backward(y.detach())
        layer.zero_grad(set_to_none=True)
        x.grad = None

    step()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def tpx_records(build):
    out = subprocess.run([os.path.join(build, "bench", "tpx-bench"), "--blocks", "--tp", "1",
                          "--json"], check=True, capture_output=True, text=True, timeout=1200).stdout
    doc = json.loads(out[out.index("{"):])
    return {r["tokens"]: r for r in doc["results"] if r.get("kind") == "layer_floor"}


def main():
    build = sys.argv[1]
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    torch.set_num_threads(1)
    hf = {t: [] for t in TOKENS}
    tpx = {t: [] for t in TOKENS}
    floor = {t: [] for t in TOKENS}
    for _ in range(rounds):
        for t in TOKENS:
            hf[t].append(transformers_step_seconds(t, 3 if t >= 1024 else 5))
        recs = tpx_records(build)
        for t in TOKENS:
            tpx[t].append(recs[t]["layer_us"] * 1e-6)
            floor[t].append(recs[t]["gemms_us"] * 1e-6)
    print(f"# Llama layer fwd+bwd, one thread each, median of {rounds} alternating rounds")
    print(f"# torch {torch.__version__}, transformers {transformers.__version__}")
    print(f"# {'tokens':>6} {'transformers(ms)':>17} {'tpx(ms)':>10} {'tpx/hf':>8} "
          f"{'tpx/gemms':>10}")
    for t in TOKENS:
        h, x, g = (statistics.median(v[t]) for v in (hf, tpx, floor))
        print(f"  {t:>6} {h * 1e3:>17.2f} {x * 1e3:>10.2f} {x / h:>8.2f} {x / g:>10.2f}")


if __name__ == "__main__":
    main()
