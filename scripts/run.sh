#!/usr/bin/env bash
# Fresh machine to first result: installs the dependencies (apt), builds (CUDA when nvcc is present), prints the
# build and devices, then runs the main job: the decode benchmark on the best available backend.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh --if-missing
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DPAGEDATTN_CUDA="${PAGEDATTN_CUDA:-AUTO}" >/dev/null
cmake --build build -j "$(nproc)"
./build/tools/cli/pagedattn info
./build/tools/cli/pagedattn bench --op decode "$@"
