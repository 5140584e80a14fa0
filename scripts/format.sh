#!/usr/bin/env bash
# Formats every C++/CUDA source in place with the checked-in .clang-format.
set -euo pipefail
cd "$(dirname "$0")/.."
git ls-files '*.h' '*.cpp' '*.cu' '*.cuh' | xargs clang-format -i
