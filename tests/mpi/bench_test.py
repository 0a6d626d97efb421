#!/usr/bin/env python3
"""tpx-bench --collectives under the MPI launcher: one JSON object from rank 0 holding, for every
size and op, a row of the thread ranks and a row of the MPI processes with its time ratio, none
with a wrong element.

usage: bench_test.py TPX_BENCH NP      Standard library only.
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import launch  # noqa: E402

tool, np = os.path.abspath(sys.argv[1]), int(sys.argv[2])
r = launch.run(np, [tool, "--collectives", "--quick", "--max-bytes", "65536", "--json"],
               timeout=240, capture_output=True, text=True,
               env=dict(os.environ, OPENBLAS_NUM_THREADS="1"))
problems = []
if r.returncode != 0:
    problems.append(f"exit {r.returncode}: {r.stderr[-1500:]}")
else:
    j = json.loads(r.stdout)  # one object: rank 0 alone prints
    rows = [x for x in j["results"] if x["kind"] == "collective"]
    threads = [x for x in rows if x["ranks"] == "threads"]
    procs = [x for x in rows if x["ranks"] == "mpi"]
    if len(threads) != 12 or len(procs) != 12:  # 4 sizes (1, 4, 16, 64 KiB) × 3 ops
        problems.append(f"{len(threads)} thread rows and {len(procs)} MPI rows, want 12 each")
    for x in rows:
        if x["wrong"] != 0 or x["tp"] != np or x["time_us"] <= 0:
            problems.append(f"row {x}")
    for t, p in zip(threads, procs):
        if (t["op"], t["bytes"]) != (p["op"], p["bytes"]) or not p["vs_threads"] > 0:
            problems.append(f"rows {t} / {p}")
    if j["outside_goal"] != 0:
        problems.append(f"outside_goal {j['outside_goal']}")
for p in problems:
    print("FAIL:", p)
print(f"tpx-bench --collectives under mpirun -np {np}: {'ok' if not problems else 'FAILED'}")
sys.exit(1 if problems else 0)
