#!/usr/bin/env bash
# A bad invocation of the pagedattn command: must exit with a usage or run error (1 or 2, never a signal or
# success), print exactly one line on stderr, and that line must contain the expected fragment.
#   expect_error.sh FRAGMENT -- COMMAND ARGS...
set -u
fragment=$1
shift 2
err=$(mktemp)
"$@" >/dev/null 2>"$err"
rc=$?
lines=$(wc -l <"$err")
message=$(cat "$err")
rm -f "$err"
if [[ $rc -ne 1 && $rc -ne 2 ]]; then
  echo "FAIL: exit code $rc (expected 1 or 2): $*"; echo "$message"; exit 1
fi
if [[ $lines -ne 1 ]]; then
  echo "FAIL: $lines lines on stderr (expected one): $*"; echo "$message"; exit 1
fi
if [[ "$message" != *"$fragment"* ]]; then
  echo "FAIL: stderr does not name '$fragment': $*"; echo "$message"; exit 1
fi
echo "ok (exit $rc): $message"
