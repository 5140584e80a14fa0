# Sourced by scripts/test.sh and scripts/gpu-check.sh: the real test totals over ctest and pytest logs.
# Call the count_* functions on each log, then print_totals; a step that could not produce results counts as
# one failed (step_failed names it).
passed=0 failed=0 skipped=0
broken_steps=()

step_failed() {
  echo "!! $1 failed"
  broken_steps+=("$1")
  failed=$((failed + 1))
}

# A ctest log: "N% tests passed, F tests failed out of T" (ctest 4 writes "100% tests passed out of T" when none
# failed) and its "(Skipped)" / "(Disabled)" / "(Not Run)" rows.
count_ctest() {
  local log=$1 summary total fail skip
  summary=$(grep -E "^[0-9]+% tests passed.* out of [0-9]+" "$log" 2>/dev/null | tail -n 1)
  total=$(echo "$summary" | grep -oE "out of [0-9]+" | grep -oE "[0-9]+$")
  fail=$(echo "$summary" | grep -oE "[0-9]+ tests? failed" | grep -oE "^[0-9]+")
  fail=${fail:-0}
  skip=$(grep -cE "\((Skipped|Disabled|Not Run)\)$" "$log" 2>/dev/null)
  if [[ -z "$total" ]]; then
    step_failed "$2 (no ctest summary)"
    return
  fi
  passed=$((passed + total - fail - skip))
  failed=$((failed + fail))
  skipped=$((skipped + skip))
}

# A pytest log's summary line ("3 failed, 40 passed, 2 skipped in 1.2s").
count_pytest() {
  local log=$1 line n kind
  line=$(grep -E "[0-9]+ (passed|failed|skipped|error|errors)" "$log" 2>/dev/null | tail -n 1)
  if [[ -z "$line" ]]; then
    step_failed "pytest (no summary)"
    return
  fi
  for kind in passed failed skipped error errors; do
    n=$(echo "$line" | grep -oE "[0-9]+ $kind\b" | grep -oE "^[0-9]+" || true)
    n=${n:-0}
    case $kind in
      passed) passed=$((passed + n)) ;;
      skipped) skipped=$((skipped + n)) ;;
      *) failed=$((failed + n)) ;;
    esac
  done
}

# A "N passed, M failed" line (pagedattn check).
count_plain() {
  local line
  line=$(grep -oE '^[0-9]+ passed, [0-9]+ failed' "$1" 2>/dev/null | tail -n 1)
  if [[ -z "$line" ]]; then
    step_failed "$2 (no summary)"
    return
  fi
  passed=$((passed + $(echo "$line" | grep -oE "^[0-9]+")))
  failed=$((failed + $(echo "$line" | grep -oE "[0-9]+ failed" | grep -oE "^[0-9]+")))
}

print_totals() {
  if [[ ${#broken_steps[@]} -gt 0 ]]; then
    echo "steps that failed before their tests could run: ${broken_steps[*]}"
  fi
  echo "$passed passed, $failed failed, $skipped skipped"
}
