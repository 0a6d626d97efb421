#!/usr/bin/env bash
# Builds tests/consumer against this checkout as subprojects/tpx and runs it.
set -euo pipefail
source_root=$1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp "$source_root/tests/consumer/meson.build" "$source_root/tests/consumer/main.cpp" "$work/"
mkdir -p "$work/subprojects"
ln -s "$source_root" "$work/subprojects/tpx"
meson setup "$work/build" "$work" -Dtpx:cuda=disabled >/dev/null
meson compile -C "$work/build" >/dev/null
OPENBLAS_NUM_THREADS=1 "$work/build/consumer"
echo "consumer built against tpx as a subproject and ran"
