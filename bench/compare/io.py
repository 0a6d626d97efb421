#!/usr/bin/env python3
"""Shard reads of tpx beside the `safetensors` package's slice, in one run.

    python3 bench/compare/io.py build/bench/tpx-bench [TP ...]       (default TP: 2 4 8)

Runs `tpx-bench --io --json` (a bf16 weight [8192, 4096], 64 MiB, page-cached; each rank opens the
file, reads its shard, closes it) and, in the same run, the same reads through
`safetensors.safe_open(file, "numpy").get_slice("w")[rows or columns]` on a file of the same shape
and element size (f16: numpy has no bf16; the bytes moved are the same). Prints the slowest
rank's median time of each, in ms (tpx's from its record: its time over the sequential read times
that read's time), and tpx's over safetensors' (lower is better). tpx reads into a buffer the rank
holds; the slice allocates its array on every call (its API has no other way), page faults
included. Needs numpy and safetensors in the Python that runs it (a venv of your own); the
repository and its tests never need them.
"""
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

ROWS, COLS, REPS = 8192, 4096, 7


def balanced(n, tp, r):
    base, extra = divmod(n, tp)
    begin = r * base + min(r, extra)
    return begin, begin + base + (1 if r < extra else 0)


def sequential(path):
    with open(path, "rb", buffering=0) as f:
        while f.read(8 << 20):
            pass


def safetensors_time(path, dim, tp):
    """The slowest rank's median time to open the file, slice its shard and close."""
    ranks = [[] for _ in range(tp)]
    for _ in range(REPS):
        for r in range(tp):
            lo, hi = balanced(ROWS if dim == 0 else COLS, tp, r)
            t0 = time.perf_counter()
            with safe_open(path, "numpy") as f:
                s = f.get_slice("w")
                block = s[lo:hi] if dim == 0 else s[:, lo:hi]
            ranks[r].append(time.perf_counter() - t0)
            assert block.shape == ((hi - lo, COLS) if dim == 0 else (ROWS, hi - lo))
    return max(statistics.median(t) for t in ranks)


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    bench, tps = sys.argv[1], [int(t) for t in sys.argv[2:]] or [2, 4, 8]
    out = subprocess.run([bench, "--io", "--json", "--tp", ",".join(map(str, tps))],
                         capture_output=True, text=True, check=True,
                         env=dict(os.environ, OPENBLAS_NUM_THREADS="1")).stdout
    # The slowest rank's time: its share of the sequential read's time (file bytes ÷ its GB/s).
    tpx = {(r["style"], r["tp"]): r["time_over_sequential"] * ROWS * COLS * 2 / 1e9 /
           r["sequential_gbps"]
           for r in json.loads(out)["results"] if r.get("kind") == "shard_read"}
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.safetensors")
        w = (np.arange(ROWS * COLS, dtype=np.float32) % 1000 / 1000).astype(np.float16)
        save_file({"w": w.reshape(ROWS, COLS)}, path)
        sequential(path)  # into the page cache
        print(f"# weight [{ROWS}, {COLS}], 2-byte elements, page-cached; the slowest rank's time "
              f"(open, read its shard, close), medians of {REPS}, ms")
        print(f"# {'style':>18} {'tp':>3} {'tpx':>8} {'safetensors':>12} {'tpx ÷ st':>9}")
        for style, dim in (("colwise (rows)", 0), ("rowwise (columns)", 1)):
            for tp in tps:
                if (style, tp) not in tpx:
                    continue
                st = safetensors_time(path, dim, tp)
                mine = tpx[(style, tp)]
                print(f"  {style:>18} {tp:>3} {mine * 1e3:>8.2f} {st * 1e3:>12.2f} {mine / st:>9.2f}")


if __name__ == "__main__":
    main()
