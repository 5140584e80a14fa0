#!/usr/bin/env bash
# On a machine with an NVIDIA GPU: configure and build (cmake + ninja, all cores), run the GPU test suite and the CPU
# suite, `pagedattn check --backend cuda`, build and install the Python package (offline) and run pytest (CUDA tests
# included), then a short benchmark (bench/driver.py --short: ours against SDPA cuDNN/flash and FlexAttention). Logs
# go to $OUT when it is set (the device tool's output folder, which takes at most 8 files), else to build-gpu/logs.
# The summary is printed last.
#   scripts/gpu-check.sh              full build (every head dim and dtype), tests, check, benchmark
#   QUICK=1 scripts/gpu-check.sh      quick build: head dim 128, bf16 queries (tests of other configurations skip);
#                                     PAGEDATTN_HEAD_DIMS / _DTYPES / _KV_FORMATS pick any subset (both builds)
#   SKIP_BENCH=1 scripts/gpu-check.sh tests only;  SKIP_PYTHON=1: no Python package build and pytest (and no driver)
#   SKIP_TESTS=1 scripts/gpu-check.sh no test suites (a second call on a warm machine: benchmarks only)
#   SANITIZE=1 scripts/gpu-check.sh   also compute-sanitizer's memcheck (also with the portable kernels forced),
#                                     synccheck and racecheck over the CUDA grid, graph replay, write_kv and the
#                                     persistent decode (scripts/sanitize.sh, SANITIZE_TIMEOUT seconds each);
#                                     summaries at the end
#   BASELINE_CLI=path scripts/gpu-check.sh   also times a baseline build's `pagedattn bench` against this one
#   KV_BENCH=1 scripts/gpu-check.sh   also the CLI's decode and prefill grids per K/V cache format (TurboQuant:
#                                     decode; KV_BENCH_TIMEOUT seconds each, 240 by default)
# The machine needs no apt: CLI11 (for the pagedattn command) comes from .deps/debs when the system lacks it
# (scripts/offline-deps.sh downloads it on a machine with apt; carry .deps to the GPU machine).
set -uo pipefail
cd "$(dirname "$0")/.."
build=${BUILD_DIR:-build-gpu}
logs=${OUT:-$build/logs}
mkdir -p "$logs"
extra=()
if [[ "${QUICK:-0}" == 1 ]]; then
  export PAGEDATTN_HEAD_DIMS=128 PAGEDATTN_DTYPES=bf16  # the Python package's build reads them too
fi
extra=(-DPAGEDATTN_HEAD_DIMS="${PAGEDATTN_HEAD_DIMS:-}" -DPAGEDATTN_DTYPES="${PAGEDATTN_DTYPES:-}"
  -DPAGEDATTN_KV_FORMATS="${PAGEDATTN_KV_FORMATS:-}")
if { [[ ! -f /usr/share/cmake/CLI11/CLI11Config.cmake ]] || [[ ! -d /usr/share/cmake/nlohmann_json ]]; } &&
  compgen -G ".deps/debs/*.deb" >/dev/null; then
  for deb in .deps/debs/*.deb; do dpkg -x "$deb" .deps/root; done
  extra+=(-DCMAKE_PREFIX_PATH="$PWD/.deps/root/usr")
  export CMAKE_PREFIX_PATH="$PWD/.deps/root/usr${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"  # the pip build too
fi
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

cuda_rc=0 cpu_rc=0 check_rc=0
if [[ "${SKIP_TESTS:-0}" != 1 ]]; then
  echo "== GPU tests"
  ctest --test-dir "$build" -L cuda -j "${GPU_TEST_JOBS:-4}" --output-on-failure --timeout 600 >"$logs/ctest_cuda.log" 2>&1
  cuda_rc=$?
  echo "== CPU tests"
  ctest --test-dir "$build" -L cpu -j "$(nproc)" --output-on-failure >"$logs/ctest_cpu.txt" 2>&1
  cpu_rc=$?
  echo "== pagedattn check --backend cuda"
  "$build/tools/cli/pagedattn" check --backend cuda >"$logs/check_cuda.log" 2>&1
  check_rc=$?
  tail -n 4 "$logs/check_cuda.log"
fi

san_rc=0
if [[ "${SANITIZE:-0}" == 1 ]]; then
  bash scripts/sanitize.sh "$build/tests/pagedattn_cuda_tests" "$logs"
  san_rc=$?
fi

# The CLI's timings against a baseline build of the same command (BASELINE_CLI=path, e.g. the previous commit's
# build carried to this machine), alternated per workload on this card: a kernel change's before and after.
if [[ -n "${BASELINE_CLI:-}" ]]; then
  echo "== A/B: baseline ($BASELINE_CLI) vs this build, alternated"
  for w in "decode 1x32768" "decode 16x512" "decode 64x512" "decode 64x4096" "prefill 4x4096" \
    "mixed 4x512@2048+64x1@4096"; do
    read -r op label <<<"$w"
    for round in 1 2; do
      for bin in "$BASELINE_CLI" "$build/tools/cli/pagedattn"; do
        t=$("$bin" bench --backend cuda --op "$op" --workload "$label" --reps 100 2>/dev/null | awk -v l="$label" '$1 == l {print $2}')
        printf '%-8s %-28s round %d %-9s %s us\n' "$op" "$label" "$round" "$([[ $bin == "$BASELINE_CLI" ]] && echo baseline || echo new)" "$t"
      done
    done
  done | tee "$logs/ab_bench.txt"
fi

# The K/V formats side by side (KV_BENCH=1): decode and prefill of the CLI's grids for each cache format,
# bytes as stored; the fp8/int8 targets are ratios to the bf16 rows of the same run.
if [[ "${KV_BENCH:-0}" == 1 ]]; then
  echo "== K/V formats: decode and prefill per cache format"
  for fmt in bf16 fp8_e4m3 fp8_e5m2 int8 tq_k8v4 tq_k4v4 tq_k3v4 tq_k3v3; do
    ops=(decode prefill)
    [[ $fmt == tq_* ]] && ops=(decode)  # TurboQuant runs every query length on its decode tile for now
    for op in "${ops[@]}"; do  # a time limit each: a kernel that hangs must not take the whole call
      timeout "${KV_BENCH_TIMEOUT:-240}" "$build/tools/cli/pagedattn" bench --backend cuda --op "$op" \
        --kv-dtype "$fmt" --reps 50 2>&1 || echo "bench --op $op --kv-dtype $fmt: exit $?"
    done
  done | tee "$logs/kv_bench.txt"
fi

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
[[ -f "$logs/sanitizer_summary.txt" ]] && cat "$logs/sanitizer_summary.txt"
source scripts/totals.sh
if [[ "${SKIP_TESTS:-0}" != 1 ]]; then
  grep -E "tests passed|tests failed" "$logs/ctest_cuda.log" | sed 's/^/cuda: /'
  grep -E "tests passed|tests failed" "$logs/ctest_cpu.txt" | sed 's/^/cpu:  /'
  [[ $cuda_rc -ne 0 ]] && grep -E "Failed|Exception" "$logs/ctest_cuda.log" | grep -v "^[0-9]*% tests" | head -n 20
  [[ $cpu_rc -ne 0 ]] && grep -E "Failed|Exception" "$logs/ctest_cpu.txt" | grep -v "^[0-9]*% tests" | head -n 20
  grep -h -oE '^[0-9]+ passed, [0-9]+ failed' "$logs/check_cuda.log" | sed 's/^/check: /'
  # The real totals over every test that ran: ctest cases (both labels), check cases and pytest cases.
  count_ctest "$logs/ctest_cuda.log" "GPU tests"
  count_ctest "$logs/ctest_cpu.txt" "CPU tests"
  count_plain "$logs/check_cuda.log" "pagedattn check"
fi
grep -E "passed|failed" "$logs/pytest.log" 2>/dev/null | tail -n 1 | sed 's/^/pytest: /'
[[ "${SKIP_PYTHON:-0}" != 1 ]] && count_pytest "$logs/pytest.log"
print_totals
[[ $failed -eq 0 && $cuda_rc -eq 0 && $cpu_rc -eq 0 && $check_rc -eq 0 && $py_rc -eq 0 && $san_rc -eq 0 ]]
