#!/usr/bin/env python3
"""tpx-run with ranks as processes: under the MPI launcher at np 1, 2, 3, 4, the hf-tiny models
transformers wrote give transformers' float64 logits (≤ 1e-12 relative) and greedy ids in tensor,
sequence and expert parallel modes, and every rank reads, holds and moves exactly what the same
run on thread ranks does. Errors end every process with one sentence and never hang: a bad
command line or input (printed once, by rank 0), and a rank that fails while the others wait in
a collective (MPI_Abort, bounded by the launcher's timeout).

usage: run_test.py TPX_RUN FIXTURES_DIR      Standard library only.
"""

import json
import os
import struct
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import launch  # noqa: E402

tool, fixtures = (os.path.abspath(a) for a in sys.argv[1:3])
failures = []
ENV = dict(os.environ, OPENBLAS_NUM_THREADS="1")


def check(ok, what):
    if not ok:
        failures.append(what)
        print("FAIL:", what)


def mpi(np, args, timeout=120):
    r = launch.run(np, [tool] + args, timeout=timeout, capture_output=True, text=True, env=ENV)
    return r.returncode, r.stdout, r.stderr


def threads(args):
    r = subprocess.run([tool] + args, capture_output=True, text=True, env=ENV)
    return r.returncode, r.stdout, r.stderr


prompts = {name: json.load(open(os.path.join(fixtures, name, "prompt.json")))
           for name in ("llama", "mixtral")}
# (model, np, extra flags): every tp the heads allow up to 4 (llama 6 / 3 heads, mixtral 4 / 2;
# llama at 4 and mixtral at 3 hold a KV head on two ranks, summed in an MPI_Comm_split sub-group
# in backward and split at load), SP, EP.
cases = [("llama", n, []) for n in (1, 2, 3, 4)] + [("mixtral", n, []) for n in (1, 2, 3, 4)]
cases += [("llama", 3, ["--sp"]), ("mixtral", 4, ["--sp"]), ("mixtral", 2, ["--ep", "2"]),
          ("mixtral", 2, ["--ep", "2", "--sp"])]
for name, np, extra in cases:
    p = prompts[name]
    model = os.path.join(fixtures, name)
    args = [model, "--ids", ",".join(map(str, p["ids"])), "--dtype", "f64", "--generate",
            str(len(p["greedy"])), "--compare", os.path.join(model, "reference.safetensors"),
            "--json"] + extra
    what = f"{name} np {np} {' '.join(extra)}"
    rc, out, err = mpi(np, args)
    check(rc == 0, f"{what}: exit {rc}, stderr {err[-2000:]!r}")
    if rc != 0:
        continue
    lines = out.strip().splitlines()
    check(len(lines) == 1, f"{what}: {len(lines)} lines on stdout (rank 0 alone prints)")
    j = json.loads(lines[0])
    check(j["backend"] == "mpi" and j["tp"] == np, f"{what}: backend {j['backend']}, tp {j['tp']}")
    check(j["compare"]["max_relative"] <= 1e-12, f"{what}: {j['compare']}")
    check(j["generated"] == p["greedy"], f"{what}: generated {j['generated']} != {p['greedy']}")
    trc, tout, terr = threads(args + ["--tp", str(np), "--backend", "threads"])
    check(trc == 0, f"{what} on threads: exit {trc}, {terr!r}")
    if trc == 0:
        t = json.loads(tout)
        check(t["backend"] == "threads" and j["ranks"] == t["ranks"],
              f"{what}: ranks as processes {j['ranks']} != as threads {t['ranks']}")

llama = os.path.join(fixtures, "llama")
good = ["--ids", "5,1,33", "--dtype", "f64"]
with tempfile.TemporaryDirectory() as tmp:
    small = os.path.join(tmp, "small.safetensors")  # logits of another shape than the run's
    header = json.dumps({"logits": {"dtype": "F64", "shape": [1, 1], "data_offsets": [0, 8]}})
    header += " " * (-len(header) % 8)
    with open(small, "wb") as f:
        f.write(struct.pack("<Q", len(header)) + header.encode() + bytes(8))
    bad = [
        # The command line and the input: every process finds the error, rank 0 prints it.
        (3, [llama, "--dtype", "f16"] + good[:2], "--dtype must be f64, f32 or bf16, got 'f16'"),
        (3, [llama, "--ids", "5,1,1000"], "token 2 of the prompt has id 1000, outside the vocabulary"),
        (3, [llama, "--tp", "2"] + good, "--tp 2 but the MPI launcher started 3 processes"),
        (4, [os.path.join(fixtures, "mixtral"), "--ep", "4"] + good,
         "6 experts cannot be split over ep = 4 ranks"),  # refused on every rank
        (2, [os.path.join(tmp, "missing")] + good, "no such model directory"),
        (2, [llama, "--backend", "threads"] + good, "would run the whole group of ranks in each of the 2"),
    ]
    for np, args, sentence in bad:
        rc, out, err = mpi(np, args)
        what = f"np {np} {' '.join(args[1:])}"
        mine = [line for line in err.splitlines() if line.startswith("tpx-run:")]
        check(rc == 2, f"{what}: exit {rc}, want 2")
        check(len(mine) == 1 and sentence in mine[0],
              f"{what}: want one line with {sentence!r}, stderr {err[-1500:]!r}")
        check(out == "", f"{what}: stdout {out!r}")
    # A rank that fails while the others wait in a collective: rank 0's --compare fails after the
    # forward; every process ends, non-zero, well inside the bound, with rank 0's sentence.
    rc, out, err = mpi(3, [llama] + good + ["--compare", small], timeout=60)
    check(rc not in (0, 124), f"a failing rank: exit {rc} (124: the job hung)")
    check("tpx-run: rank 0 of 3: --compare" in err and "its logits are [1, 1]" in err,
          f"a failing rank: stderr {err[-1500:]!r}")

print(f"{len(cases)} model runs and their thread twins, the error cases: "
      f"{'ok' if not failures else f'{len(failures)} failures'}")
sys.exit(1 if failures else 0)
