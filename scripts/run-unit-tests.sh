#!/bin/sh
# Run each unit-test binary; print its output and a closing tally.
# Usage: scripts/run-unit-tests.sh DIR NAME...
dir=$1; shift
passed=0; failed=0; failed_names=""
for t in "$@"; do
  echo "=== $t"
  if "$dir/$t"; then
    passed=$((passed + 1))
  else
    failed=$((failed + 1)); failed_names="$failed_names $t"
  fi
done
[ -n "$failed_names" ] && echo "failed test programs:$failed_names"
echo "unit: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
