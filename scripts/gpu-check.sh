#!/usr/bin/env bash
# On a machine with an NVIDIA GPU: configure and build (cmake + ninja, all cores), run the GPU test suite and the CPU
# suite, `pagedattn check --backend cuda`, build and install the Python package (offline) and run pytest (CUDA tests
# included), then a short benchmark (bench/driver.py --short: ours against SDPA cuDNN/flash and FlexAttention). Logs go to $OUT when it is set (the device tool's
# output folder, which takes at most 8 files), else to build-gpu/logs. The test summary is printed last.
#   scripts/gpu-check.sh              full build (every head dim and dtype), tests, check, benchmark
#   QUICK=1 scripts/gpu-check.sh      quick build: head dim 128, bf16 only
#   SKIP_BENCH=1 scripts/gpu-check.sh tests only;  SKIP_PYTHON=1: no Python package build and pytest (and no driver)
set -uo pipefail
cd "$(dirname "$0")/.."
build=${BUILD_DIR:-build-gpu}
logs=${OUT:-$build/logs}
mkdir -p "$logs"
extra=()
[[ "${QUICK:-0}" == 1 ]] && extra=(-DPAGEDATTN_HEAD_DIMS=128 -DPAGEDATTN_DTYPES=bf16)
env_log="$logs/environment.log"
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.mem --format=csv | tee "$env_log"

echo "== build"
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DPAGEDATTN_CUDA=ON "${extra[@]}" >>"$env_log" 2>&1 &&
  cmake --build "$build" -j "$(nproc)" >"$logs/build.log" 2>&1
if [[ $? -ne 0 ]]; then
  tail -n 40 "$logs/build.log"
  echo "0 passed, 1 failed"
  exit 1
fi
"$build/tools/cli/pagedattn" info | tee -a "$env_log"

echo "== GPU tests"
ctest --test-dir "$build" -L cuda -j 1 --output-on-failure --timeout 600 >"$logs/ctest_cuda.log" 2>&1
cuda_rc=$?
echo "== CPU tests"
ctest --test-dir "$build" -L cpu -j "$(nproc)" --output-on-failure >>"$env_log" 2>&1
cpu_rc=$?
echo "== pagedattn check --backend cuda"
"$build/tools/cli/pagedattn" check --backend cuda >"$logs/check_cuda.log" 2>&1
check_rc=$?
tail -n 4 "$logs/check_cuda.log"

py_rc=0
if [[ "${SKIP_PYTHON:-0}" != 1 ]]; then
  echo "== python package (offline build) + pytest"
  env | grep -E "FLAGS|CMAKE|^CXX=|^CC=" >>"$env_log"
  if python3 -m pip install -v --no-build-isolation --no-deps . >>"$env_log" 2>&1; then
    (cd /tmp && python3 -c "import pagedattn; print(pagedattn.info())") | tee -a "$env_log"
    python3 -m pytest -q python/tests -p no:cacheprovider >"$logs/pytest.log" 2>&1
    py_rc=$?
  else
    echo "pip install failed (see environment.log)"
    py_rc=1
  fi
  tail -n 3 "$logs/pytest.log"
fi

if [[ "${SKIP_BENCH:-0}" != 1 ]]; then
  echo "== benchmark: C++ CLI smoke (mixed batch), then the driver against the peers (short mode)"
  "$build/tools/cli/pagedattn" bench --backend cuda --op mixed --reps 20 2>&1 | tee "$logs/bench.txt"
  [[ "${SKIP_PYTHON:-0}" != 1 ]] && python3 bench/driver.py --short --out "$logs" 2>&1 | tee -a "$logs/bench.txt"
fi

echo "== summary"
grep -E "tests passed|tests failed" "$logs/ctest_cuda.log" | sed 's/^/cuda: /'
grep -E "tests passed|tests failed" "$env_log" | sed 's/^/cpu:  /'
[[ $cuda_rc -ne 0 ]] && grep -E "Failed|Exception" "$logs/ctest_cuda.log" | grep -v "^[0-9]*% tests" | head -n 20
grep -h -oE '^[0-9]+ passed, [0-9]+ failed' "$logs/check_cuda.log" | sed 's/^/check: /'
passed=0
failed=0
grep -E "passed|failed" "$logs/pytest.log" 2>/dev/null | tail -n 1 | sed 's/^/pytest: /'
for rc in $cuda_rc $cpu_rc $check_rc $py_rc; do
  if [[ $rc -eq 0 ]]; then passed=$((passed + 1)); else failed=$((failed + 1)); fi
done
echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]]
