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
# OpenBLAS outside the system's directories (a prefix of its own, headers under include/openblas,
# as Fedora and source builds lay them out): tpx::tpx finds cblas.h beside the library.
blas=$(find /usr/include -name cblas.h -path '*openblas*' | head -1)
lib=$(find /usr/lib /usr/lib64 -name 'libopenblas.so' 2>/dev/null | head -1)
if [ -n "$blas" ] && [ -n "$lib" ]; then
  mkdir -p "$work/blas/lib" "$work/blas/include/openblas"
  cp "$(dirname "$blas")"/*.h "$work/blas/include/openblas/"
  ln -s "$lib" "$work/blas/lib/libopenblas.so"
  cmake -S "$work" -B "$work/build-blas" -DCMAKE_PREFIX_PATH="$work/stage$prefix" \
    -DTPX_CBLAS_LIBRARY="$work/blas/lib/libopenblas.so" \
    -DEXPECT_CBLAS_DIR="$work/blas/include/openblas" >/dev/null
  cmake --build "$work/build-blas" >/dev/null
  echo "OpenBLAS in a prefix of its own: cblas.h found beside the library"
  # A cblas.h directory that holds none: configure stops with tpx's sentence.
  if cmake -S "$work" -B "$work/build-none" -DCMAKE_PREFIX_PATH="$work/stage$prefix" \
       -DTPX_CBLAS_INCLUDE_DIR="$work/nothing" > "$work/none.log" 2>&1; then
    echo "configure succeeded with TPX_CBLAS_INCLUDE_DIR holding no cblas.h"; exit 1
  fi
  grep -q "tpx: no cblas.h for" "$work/none.log" ||
    { echo "expected tpx's sentence about cblas.h:"; cat "$work/none.log"; exit 1; }
  echo "a TPX_CBLAS_INCLUDE_DIR without cblas.h is refused with tpx's sentence"
fi
# pkg-config: the same source with -std=c++20 and tpx.pc's flags (which carry no -std flag).
# The staged .pc files name the install prefix; point them at the stage instead.
mkdir "$work/pc"
for f in $(find "$work/stage" -name 'tpx*.pc'); do
  sed "s|^prefix=.*|prefix=$work/stage$prefix|" "$f" > "$work/pc/$(basename "$f")"
done
pc() { PKG_CONFIG_PATH="$work/pc" pkg-config "$@"; }
# shellcheck disable=SC2046
c++ -std=c++20 "$work/main.cpp" -o "$work/pc_consumer" $(pc --cflags --libs tpx)
OPENBLAS_NUM_THREADS=1 "$work/pc_consumer"
echo "consumer built with -std=c++20 \$(pkg-config --cflags --libs tpx) and ran"
# A C++23 consumer stays C++23 with tpx.pc's flags after its own.
printf '#include <tpx/tpx.hpp>\nstatic_assert(__cplusplus > 202002L, "tpx.pc lowered the standard");\nint main() { return 0; }\n' > "$work/cxx23.cpp"
# shellcheck disable=SC2046
c++ -std=c++23 "$work/cxx23.cpp" -o "$work/cxx23" $(pc --cflags --libs tpx)
"$work/cxx23"
echo "a C++23 consumer kept C++23 with \$(pkg-config --cflags --libs tpx)"
# The cuda backend (when this build has it): find_package(tpx CONFIG REQUIRED COMPONENTS cuda),
# linked against tpx::cuda; run where a device is (exit 77 says there is none).
if [ -n "$(find "$work/stage" -name libtpx-cuda-kernels.a)" ]; then
  mkdir "$work/cuda"
  cp "$source_root/tests/cmake_consumer/cuda/CMakeLists.txt" "$source_root/tests/cmake_consumer/cuda/main.cpp" "$work/cuda/"
  cmake -S "$work/cuda" -B "$work/cuda/build" -DCMAKE_PREFIX_PATH="$work/stage$prefix" >/dev/null
  cmake --build "$work/cuda/build" >/dev/null
  status=0
  "$work/cuda/build/cuda_consumer" || status=$?
  [ $status -eq 0 ] || [ $status -eq 77 ] || exit $status
  echo "cuda consumer built with CMake against tpx::cuda and linked"
  # shellcheck disable=SC2046
  c++ -std=c++20 "$work/cuda/main.cpp" -o "$work/pc_cuda_consumer" $(pc --cflags --libs tpx-cuda)
  status=0
  "$work/pc_cuda_consumer" || status=$?
  [ $status -eq 0 ] || [ $status -eq 77 ] || exit $status
  echo "cuda consumer built with -std=c++20 \$(pkg-config --cflags --libs tpx-cuda) and linked"
fi
