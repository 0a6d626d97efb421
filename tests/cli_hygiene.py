#!/usr/bin/env python3
"""The command line of one of tpx's programs, as a new user meets it.

usage: cli_hygiene.py PROGRAM FLAG... [-- NUMBER_FLAG...]

  --help            exit 0; the text names every FLAG given (each mode and option) and --version
  --version         exit 0; "PROGRAM (tpx X.Y.Z)" on stdout, nothing on stderr
  --no-such-flag    exit 2; one line on stderr naming it; nothing on stdout
  NUMBER_FLAG abc   exit 2; one line on stderr saying the flag takes a number; nothing on stdout
  NUMBER_FLAG 0     for --tp: exit 2 before any work (nothing on stdout)
"""
import subprocess
import sys


def run(program, *args):
    r = subprocess.run([program, *args], capture_output=True, text=True, timeout=60)
    return r.returncode, r.stdout, r.stderr


def main():
    program = sys.argv[1]
    rest = sys.argv[2:]
    flags, numbers = (rest[: rest.index("--")], rest[rest.index("--") + 1:]) if "--" in rest else (rest, [])
    failures = []

    def check(what, ok, detail):
        if not ok:
            failures.append(f"{what}: {detail}")

    code, out, err = run(program, "--help")
    check("--help", code == 0, f"exit {code}, stderr {err!r}")
    for flag in flags + ["--version"]:
        check("--help", flag in out, f"does not describe {flag}")
    code, out, err = run(program, "--version")
    name = program.rsplit("/", 1)[-1]
    check("--version", code == 0 and err == "" and out.startswith(name + " (tpx ") and
          out.endswith(")\n") and out.count("\n") == 1, f"exit {code}, stdout {out!r}, stderr {err!r}")

    def refused(args, words):
        code, out, err = run(program, *args)
        what = " ".join(args)
        check(what, code == 2, f"exit {code} (want 2); stderr {err!r}")
        check(what, out == "", f"printed on stdout before refusing: {out[:200]!r}")
        first = err.strip().splitlines()[0] if err.strip() else ""
        check(what, all(w in first for w in words), f"stderr's first line {first!r} lacks {words}")

    refused(["--no-such-flag"], ["--no-such-flag"])
    for flag in numbers:
        refused([flag, "abc"], [flag, "abc"])
        if flag == "--tp":
            refused([flag, "0"], [flag, "0"])
    for f in failures:
        print(f"{program}: {f}", file=sys.stderr)
    if failures:
        return 1
    print(f"{program}: --help names {len(flags)} flags; unknown flags and bad numbers refused")
    return 0


if __name__ == "__main__":
    sys.exit(main())
