#!/usr/bin/env bash
# Fresh machine to first result: installs the dependencies (apt, and the .venv for the Python package), builds
# (CUDA when nvcc is present), prints the build and devices, then runs the main job: the decode benchmark on
# the best available backend. The command it builds stays at build/tools/cli/pagedattn.
#   scripts/run.sh [bench flags...]      e.g. scripts/run.sh --op prefill --reps 5
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh --if-missing
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DPAGEDATTN_CUDA="${PAGEDATTN_CUDA:-AUTO}" >/dev/null
cmake --build build -j "$(nproc)"
./build/tools/cli/pagedattn info
./build/tools/cli/pagedattn bench "$@"
echo "(the pagedattn command is at build/tools/cli/pagedattn; 'build/tools/cli/pagedattn help' lists its commands)"
