#!/usr/bin/env python3
"""Encoding speed of tpx's tokenizer beside Hugging Face `tokenizers`, in one run.

    python3 bench/compare/encode.py build/bench/tpx-bench TOKENIZER_JSON TEXT_FILE [ROUNDS]

Alternates, ROUNDS times (default 5): `tpx-bench --tokenize TOKENIZER_JSON --text TEXT_FILE
--json` (tpx encodes the whole file as one text; its best of 5 repetitions in the process) and,
in this process, `tokenizers`' `Tokenizer.encode` of the same text, best of 5
(TOKENIZERS_PARALLELISM off: one thread, as tpx's encode). Prints each one's median MB/s and
tokens/s over the rounds, tpx's over tokenizers' (above 1: tpx is faster), and whether the ids
are equal (tpx-bench reports their count and a checksum). Needs `tokenizers` in the Python that
runs it (a venv of your own); the repository never needs it.
"""
import json
import os
import statistics
import subprocess
import sys
import time

os.environ["TOKENIZERS_PARALLELISM"] = "false"
from tokenizers import Tokenizer  # noqa: E402


def checksum(ids):
    """What tpx-bench --tokenize reports: Σ id · (position + 1) mod 2^61 − 1."""
    return sum(i * (k + 1) for k, i in enumerate(ids)) % (2 ** 61 - 1)


bench, tok_path, text_path = sys.argv[1:4]
rounds = int(sys.argv[4]) if len(sys.argv) > 4 else 5
raw = open(text_path, "rb").read()
text = raw.decode("utf-8", "replace")
t = Tokenizer.from_file(tok_path)
want = t.encode(text).ids
tpx, hf, equal = [], [], True
for _ in range(rounds):
    p = subprocess.run([bench, "--tokenize", tok_path, "--text", text_path, "--json"],
                       capture_output=True, text=True, check=True)
    rec = next(r for r in json.loads(p.stdout)["results"] if r.get("mode") == "tokenize")
    tpx.append(rec["mb_per_s"])
    equal = equal and rec["tokens"] == len(want) and rec["checksum"] == checksum(want)
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        t.encode(text)
        best = min(best, time.perf_counter() - t0)
    hf.append(len(raw) / best / 1e6)
per_mb = len(want) / (len(raw) / 1e6)
a, b = statistics.median(tpx), statistics.median(hf)
print(f"# {len(raw)} bytes of {text_path}, {len(want)} tokens of {tok_path}; medians of {rounds} rounds")
print(f"tpx         {a:8.2f} MB/s {a * per_mb:12.0f} tokens/s")
print(f"tokenizers  {b:8.2f} MB/s {b * per_mb:12.0f} tokens/s")
print(f"tpx / tokenizers {a / b:.2f}; ids {'equal' if equal else 'DIFFERENT'}")
sys.exit(0 if equal else 1)
