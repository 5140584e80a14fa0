#!/usr/bin/env bash
# Installs the build tree given as $1 into a fresh prefix, then configures, builds and runs the out-of-tree
# consumer (tests/install/consumer) against it with find_package(pagedattn): the C++ package as users get it.
set -euo pipefail
build=$1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cmake --install "$build" --prefix "$work/prefix" >/dev/null
test -f "$work/prefix/include/pagedattn/pagedattn.h"
cmake -S "$(dirname "$0")/consumer" -B "$work/build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$work/prefix" >/dev/null
cmake --build "$work/build" >/dev/null
"$work/build/consumer"
