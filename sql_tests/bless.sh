#!/bin/sh
# sql_tests/bless.sh native|self NAME...: write sql_tests/NAME.expected.
#   native: from the same script run on native WITHOUT ROWID tables
#           (sql_tests/to_native.py rewrites the CREATE VIRTUAL TABLEs and
#           blanks lines marked "-- bftree-only")
#   self:   from bftree itself (for bftree-only tests)
# Never bless output you have not read: check the .expected by eye.
cd "$(dirname "$0")/.." || exit 1
mode=$1; shift
for name in "$@"; do
  name=${name%.sql}
  TESTDIR=$(mktemp -d "${TMPDIR:-/tmp}/bftree-sql-XXXXXX"); export TESTDIR
  WORK=$(mktemp -d "${TMPDIR:-/tmp}/bftree-sqlwork-XXXXXX")
  if [ "$mode" = native ]; then
    python3 sql_tests/to_native.py "sql_tests/$name.sql" > "$WORK/in0.sql"
  else
    cp "sql_tests/$name.sql" "$WORK/in0.sql"
  fi
  sed "s#@TESTDIR@#$TESTDIR#g" "$WORK/in0.sql" > "$WORK/in.sql"
  timeout 120 sqlite3 -batch "$TESTDIR/test.db" < "$WORK/in.sql" 2>&1 |
    sed "s#$TESTDIR#TESTDIR#g" > "sql_tests/$name.expected"
  rm -rf "$TESTDIR" "$WORK"
  echo "wrote sql_tests/$name.expected ($(wc -l < "sql_tests/$name.expected") lines)"
done
