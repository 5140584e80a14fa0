#!/usr/bin/env bash
# Installs the build tree given as $1 into a fresh prefix, then configures, builds and runs the out-of-tree
# consumer (tests/install/consumer) against it with find_package(pagedattn): the C++ package as users get it.
# $2 (optional): flags the consumer must compile and link with to use this build, e.g. the sanitizer flags of a
# sanitized build (its static library calls into the ASan/UBSan runtime, which only the final link brings in).
set -euo pipefail
build=$1
extra_flags=${2:-}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cmake --install "$build" --prefix "$work/prefix" >/dev/null
test -f "$work/prefix/include/pagedattn/pagedattn.h"
cmake -S "$(dirname "$0")/consumer" -B "$work/build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$work/prefix" -DCMAKE_CXX_FLAGS="$extra_flags" -DCMAKE_EXE_LINKER_FLAGS="$extra_flags" >/dev/null
cmake --build "$work/build" >/dev/null
"$work/build/consumer"
