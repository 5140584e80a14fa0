#!/usr/bin/env bash
# Every test: format check, the Release build (CUDA sources compiled when nvcc is present) with its test suite
# (the CUDA suite too where a GPU is), the CPU tests once more under AddressSanitizer + UndefinedBehaviorSanitizer,
# and the Python package (pip install into .venv + pytest). CI runs exactly this (.ci/run).
#
# The last line is the real count over every test that ran: "N passed, M failed, K skipped" (ctest cases of
# both builds and pytest cases). A step that fails before its tests can run (format, a build, the pip install)
# counts as one failed and is named; the totals are printed whatever fails.
set -uo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc)
log_dir=build-logs
mkdir -p "$log_dir"
source scripts/totals.sh

if ! bash scripts/install-deps.sh --if-missing; then
  step_failed "dependency install (scripts/install-deps.sh)"
fi

echo "== clang-format"
if ! git ls-files '*.h' '*.cpp' '*.cu' '*.cuh' | xargs clang-format --dry-run --Werror; then
  echo "clang-format: files above do not follow .clang-format (run scripts/format.sh)"
  step_failed "clang-format"
fi

echo "== release build"
if cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DPAGEDATTN_CUDA="${PAGEDATTN_CUDA:-AUTO}" >/dev/null &&
  cmake --build build -j "$jobs"; then
  echo "== tests (release)"
  labels=(-L cpu)
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    labels=()  # a GPU is here: the CUDA suite runs too
  else
    echo "(no GPU: the CUDA tests are compiled but not run; scripts/gpu-check.sh runs them on a GPU machine)"
  fi
  ctest --test-dir build "${labels[@]}" -j "$jobs" --output-on-failure >"$log_dir/ctest-release.log" 2>&1
  tail -n 15 "$log_dir/ctest-release.log"
  count_ctest "$log_dir/ctest-release.log" "release tests"
else
  step_failed "release build"
fi

echo "== CPU build under ASan + UBSan"
if cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPAGEDATTN_CUDA=OFF \
  -DPAGEDATTN_SANITIZE=ON >/dev/null && cmake --build build-asan -j "$jobs"; then
  echo "== tests (asan+ubsan)"
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    ctest --test-dir build-asan -j "$jobs" --output-on-failure >"$log_dir/ctest-asan.log" 2>&1
  tail -n 15 "$log_dir/ctest-asan.log"
  count_ctest "$log_dir/ctest-asan.log" "asan tests"
else
  step_failed "ASan + UBSan build"
fi

echo "== python package (pip install into .venv, pytest)"
if [[ -x .venv/bin/python ]] &&
  .venv/bin/python -m pip install --disable-pip-version-check --no-build-isolation --no-deps . \
    >"$log_dir/pip-install.log" 2>&1; then
  .venv/bin/python -m pytest -q python/tests >"$log_dir/pytest.log" 2>&1
  tail -n 5 "$log_dir/pytest.log"
  count_pytest "$log_dir/pytest.log"
else
  tail -n 30 "$log_dir/pip-install.log" 2>/dev/null
  step_failed "python package install"
fi

print_totals
[[ $failed -eq 0 ]]
