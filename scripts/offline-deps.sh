#!/usr/bin/env bash
# For a machine without apt or network (our GPU machine): run this here, where apt works, to download the
# Debian packages the C++ build needs beyond a CUDA image (CLI11 and nlohmann-json, both header-only) into
# .deps/debs. There, scripts/gpu-check.sh unpacks them into .deps/root and points CMake at it when the system
# lacks them.
# The device tool carries the folder: run(..., carry=[".deps"]).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .deps/debs
cd .deps/debs
apt-get download libcli11-dev nlohmann-json3-dev >/dev/null
ls -1 "$PWD"
