#!/bin/sh
# sql_tests/run.sh: run every sql_tests/*.sql through the sqlite3 shell and
# compare with its .expected file; then run the C test programs: the
# differential test, the two-connection test and the short crash test
# (BF_CRASH_KILLS kills, default 30; `make crash` runs 1000).
#
# Builds nothing: `make test` / `make sqltest` build bftree.so and
# build/rel/sql_tests/{difftest,twoconn,crashtest} first.  Run from anywhere.
#
# Each test runs in a fresh directory $TESTDIR with the database
# $TESTDIR/test.db, the current directory being the repository root (so
# `.load ./bftree` works); stdout and stderr are compared together, with the
# directory name replaced by TESTDIR (and @TESTDIR@ in the script replaced by
# the directory, e.g. for `.open @TESTDIR@/test.db`).  Prints each failing diff, ends with
# "sql: N passed, M failed" and exits non-zero on failure.
#
#   sql_tests/run.sh [name ...]   only the named tests (x or x.sql)
#   SQLITE3=path                  the shell to use (default sqlite3)
#   BF_SKIP_DIFFTEST=1            skip the C test programs
#   BFTREE_SO=path                the module to test (default ./bftree.so;
#                                 the scripts' `.load ./bftree` loads it)
#   SQL_TEST_BIN=dir              where the C test programs are (default
#                                 build/rel/sql_tests)
#   SQL_TEST_PRELOAD=lib          preloaded into the sqlite3 shell (a
#                                 sanitizer's runtime), leak checks off there;
#                                 through ld.so --preload in a wrapper that
#                                 the scripts' `.shell sqlite3` finds too, so
#                                 that /bin/sh and other tools do not get it
# `make asan`, `make ubsan` and `make tsan` run this with a sanitized module
# and test programs, the sanitizer's runtime preloaded into the shell.
cd "$(dirname "$0")/.." || exit 1
ROOT=$(pwd)
SQLITE3=${SQLITE3:-sqlite3}
SO=${BFTREE_SO:-$ROOT/bftree.so}
BIN=${SQL_TEST_BIN:-$ROOT/build/rel/sql_tests}
case "$SO" in /*) ;; *) SO="$ROOT/$SO" ;; esac
case "$BIN" in /*) ;; *) BIN="$ROOT/$BIN" ;; esac
if [ ! -f "$SO" ]; then
  echo "run.sh: $SO is missing (run make first)" >&2
  exit 1
fi
passed=0; failed=0; failed_names=""
WRAPDIR=""
if [ -n "$SQL_TEST_PRELOAD" ]; then
  REAL=$(command -v "$SQLITE3")
  LDSO=$(readelf -l "$REAL" 2>/dev/null | sed -n 's/.*interpreter: \(.*\)]$/\1/p')
  if [ -z "$LDSO" ] || [ -z "$REAL" ]; then
    echo "run.sh: cannot preload $SQL_TEST_PRELOAD (no ld.so or no $SQLITE3)" >&2
    exit 1
  fi
  WRAPDIR=$(mktemp -d "${TMPDIR:-/tmp}/bftree-sqlwrap-XXXXXX")
  printf '#!/bin/sh\nexec "%s" --preload "%s" "%s" "$@"\n' \
    "$LDSO" "$SQL_TEST_PRELOAD" "$REAL" > "$WRAPDIR/sqlite3"
  chmod +x "$WRAPDIR/sqlite3"
  SQLITE3="$WRAPDIR/sqlite3"
  PATH="$WRAPDIR:$PATH"; export PATH
  trap 'rm -rf "$WRAPDIR"' EXIT
fi
if [ $# -gt 0 ]; then
  tests=""; for t in "$@"; do tests="$tests sql_tests/${t%.sql}.sql"; done
else
  tests=$(ls sql_tests/*.sql)
fi
for t in $tests; do
  name=$(basename "$t" .sql)
  exp="sql_tests/$name.expected"
  TESTDIR=$(mktemp -d "${TMPDIR:-/tmp}/bftree-sql-XXXXXX")
  WORK=$(mktemp -d "${TMPDIR:-/tmp}/bftree-sqlwork-XXXXXX")
  export TESTDIR
  out="$WORK/out"
  sed -e "s#@TESTDIR@#$TESTDIR#g" -e "s#\.load \./bftree#.load ${SO%.so}#g" \
    "$t" > "$WORK/in.sql"
  (cd "$ROOT" && ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0" \
     timeout 120 "$SQLITE3" -batch "$TESTDIR/test.db" < "$WORK/in.sql" 2>&1) |
    sed "s#$TESTDIR#TESTDIR#g" > "$out.raw"
  mv "$out.raw" "$out"
  if [ -f "$exp" ] && diff -u "$exp" "$out" > "$WORK/diff"; then
    passed=$((passed + 1))
  else
    failed=$((failed + 1)); failed_names="$failed_names $name"
    echo "--- FAILED: $name"
    if [ -f "$exp" ]; then cat "$WORK/diff"; else echo "(no $exp)"; fi
  fi
  rm -rf "$TESTDIR" "$WORK"
done
if [ -z "$BF_SKIP_DIFFTEST" ] && [ $# -eq 0 ]; then
  for prog in difftest twoconn crashtest; do
    bin="$BIN/$prog"
    if [ -x "$bin" ]; then
      echo "=== $prog"
      if "$bin" "$SO"; then
        passed=$((passed + 1))
      else
        failed=$((failed + 1)); failed_names="$failed_names $prog"
      fi
    else
      echo "--- FAILED: $prog ($bin not built: make sqltest builds it)"
      failed=$((failed + 1)); failed_names="$failed_names $prog"
    fi
  done
fi
[ -n "$failed_names" ] && echo "failed:$failed_names"
echo "sql: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
