#!/usr/bin/env bash
# Installs this build of tpx into a temporary prefix, then configures, builds and runs a CMake
# project (tests/cmake_consumer, the consumer source of tests/consumer) against it with
# find_package(tpx CONFIG REQUIRED) — no C++ standard flag of its own: tpx::tpx brings C++20.
set -euo pipefail
source_root=$1
build_root=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
meson install -C "$build_root" --no-rebuild --quiet --destdir "$work/stage" >/dev/null
prefix=$(meson introspect "$build_root" --buildoptions |
         python3 -c 'import json, sys; print(next(o["value"] for o in json.load(sys.stdin) if o["name"] == "prefix"))')
cp "$source_root/tests/cmake_consumer/CMakeLists.txt" "$source_root/tests/consumer/main.cpp" "$work/"
cmake -S "$work" -B "$work/build" -DCMAKE_PREFIX_PATH="$work/stage$prefix" >/dev/null
cmake --build "$work/build" >/dev/null
OPENBLAS_NUM_THREADS=1 "$work/build/consumer"
echo "consumer built with CMake against an installed tpx (find_package(tpx CONFIG)) and ran"
