#!/usr/bin/env python3
"""Compiles one source and checks the outcome.

usage: expect.py pass|fail MESSAGE SOURCE -- COMPILER [ARGS...]

'fail' passes only when the compiler fails and its output contains MESSAGE (tpx's own
static_assert text), so a failure for any other reason is a test failure. 'pass' passes only when
the source compiles.
"""
import subprocess
import sys


def main() -> int:
    expectation, message, source = sys.argv[1:4]
    if sys.argv[4] != "--":
        print("usage: expect.py pass|fail MESSAGE SOURCE -- COMPILER [ARGS...]", file=sys.stderr)
        return 2
    command = sys.argv[5:] + [source]
    result = subprocess.run(command, capture_output=True, text=True)
    output = result.stdout + result.stderr
    if expectation == "pass":
        if result.returncode == 0:
            print(f"compiled as expected: {source}")
            return 0
        print(f"expected {source} to compile, but it failed:\n{output}")
        return 1
    if result.returncode == 0:
        print(f"expected {source} to fail to compile, but it compiled")
        return 1
    if message not in output:
        print(f"{source} failed to compile, but not with tpx's message {message!r}:\n{output}")
        return 1
    print(f"failed as expected, with {message!r}: {source}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
