#!/usr/bin/env bash
# Builds tests/consumer against this checkout as subprojects/tpx, exactly as the README's "Use
# from Meson" sets it up, and runs it.
set -euo pipefail
source_root=$1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp "$source_root/tests/consumer/meson.build" "$source_root/tests/consumer/main.cpp" "$work/"
mkdir -p "$work/subprojects"
ln -s "$source_root" "$work/subprojects/tpx"
meson setup "$work/build" "$work" >/dev/null
meson compile -C "$work/build" >/dev/null
OPENBLAS_NUM_THREADS=1 "$work/build/consumer"
# As a subproject tpx builds nothing of its own (no tool, no kernels) unless the consumer asks.
objects=$(find "$work/build" -name '*.o' | sort)
if [ "$(echo "$objects" | wc -l)" -ne 1 ]; then
  echo "the consumer's build compiled more than its own main.cpp:" >&2
  echo "$objects" >&2
  exit 1
fi
echo "consumer built against tpx as a subproject (compiling only its own main.cpp) and ran"
