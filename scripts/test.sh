#!/usr/bin/env bash
# Every test: format check, the Release build (CUDA sources compiled when nvcc is present) with its test suite, the
# CPU tests once more under AddressSanitizer + UndefinedBehaviorSanitizer, and the Python package (pip install +
# pytest). Prints "N passed, M failed" last (one count per step).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh --if-missing
jobs=$(nproc)
failed=0

echo "== clang-format"
if ! git ls-files '*.h' '*.cpp' '*.cu' '*.cuh' | xargs clang-format --dry-run --Werror; then
  echo "clang-format: files above do not follow .clang-format (run scripts/format.sh)"; failed=$((failed + 1))
fi

echo "== release build"
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DPAGEDATTN_CUDA="${PAGEDATTN_CUDA:-AUTO}" >/dev/null
cmake --build build -j "$jobs"
echo "== tests (release)"
labels=(-L cpu)
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  labels=()  # a GPU is here: the CUDA suite runs too
else
  echo "(no GPU: the CUDA tests are compiled but not run; scripts/gpu-check.sh runs them on a GPU machine)"
fi
ctest --test-dir build "${labels[@]}" -j "$jobs" --output-on-failure | tail -n 15 || failed=$((failed + 1))

echo "== CPU build under ASan + UBSan"
cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPAGEDATTN_CUDA=OFF -DPAGEDATTN_SANITIZE=ON \
  >/dev/null
cmake --build build-asan -j "$jobs"
echo "== tests (asan+ubsan)"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --test-dir build-asan -j "$jobs" --output-on-failure | tail -n 15 || failed=$((failed + 1))

echo "== python package (pip install, pytest)"
if python3 -m pip install --no-build-isolation --no-deps . >build/pip-install.log 2>&1; then
  python3 -m pytest -q python/tests 2>&1 | tail -n 5 || failed=$((failed + 1))
else
  tail -n 30 build/pip-install.log
  failed=$((failed + 1))
fi

passed=$((4 - failed))
echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]]
