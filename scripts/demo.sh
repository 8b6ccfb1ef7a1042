#!/bin/sh
# scripts/demo.sh: the bftree SQLite extension at work (run by `make demo`).
#
# Installs what is missing, builds bftree.so, then runs the sqlite3 shell on
# a demo script: a table of DEMO_ROWS rows (default 250000, about 25 MiB of
# data) in a bftree table whose buffer is 4 MiB, point lookups, range scans,
# updates and deletes with timings (.timer on), the engine's statistics, an
# integrity check, and the data read back after reopening the database.
#
#   DEMO_ROWS=n      rows to load
#   DEMO_DIR=dir     where the database goes (default build/demo; wiped)
set -e
cd "$(dirname "$0")/.."
scripts/install-deps.sh
[ -f bftree.so ] && [ -z "$DEMO_REBUILD" ] || make --no-print-directory
make --no-print-directory VARIANT=rel bftree.so >/dev/null
ROWS=${DEMO_ROWS:-250000}
DIR=${DEMO_DIR:-build/demo}
rm -rf "$DIR"
mkdir -p "$DIR"
DB="$DIR/demo.db"
cat > "$DIR/demo.sql" <<SQL
.load ./bftree
.headers on
.mode column
.print '-- A bftree table: 4 MiB of buffer for about 25 MiB of rows.'
CREATE VIRTUAL TABLE orders USING bftree(
  id INTEGER PRIMARY KEY, customer TEXT, amount REAL, note TEXT,
  buffer_size='4MiB');
CREATE TABLE customers(name TEXT PRIMARY KEY, city TEXT) WITHOUT ROWID;
INSERT INTO customers VALUES('customer1', 'Oslo'), ('customer2', 'Lima'), ('customer3', 'Pune');
.timer on
.print '-- Load $ROWS rows in one transaction.'
BEGIN;
WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < $ROWS)
INSERT INTO orders
  SELECT (i * 7919) % 1000003, 'customer' || (i % 5000), (i % 1000) / 10.0,
         printf('order %d: %s', i, hex(randomblob(24)))
  FROM c;
COMMIT;
.print '-- Point lookups (one engine get each).'
SELECT * FROM orders WHERE id = 7919;
SELECT * FROM orders WHERE id = 500000;
SELECT id, amount FROM orders WHERE id IN (15838, 23757, 31676, 999999);
.print '-- Range scans: the cursor reads leaves in key order.'
SELECT count(*), sum(amount), min(id), max(id) FROM orders WHERE id BETWEEN 100000 AND 200000;
SELECT id, customer, amount FROM orders WHERE id > 990000 ORDER BY id DESC LIMIT 5;
SELECT id FROM orders ORDER BY id LIMIT 3 OFFSET 100000;
SELECT count(*) FROM orders;
.print '-- The plans SQLite chose.'
EXPLAIN QUERY PLAN SELECT * FROM orders WHERE id = 7919;
EXPLAIN QUERY PLAN SELECT * FROM orders WHERE id BETWEEN 100000 AND 200000 ORDER BY id DESC;
.print '-- A join with a native table, updates and deletes by range.'
SELECT c.city, count(*), round(sum(o.amount), 1) AS total
  FROM orders AS o JOIN customers AS c ON o.customer = c.name
  WHERE o.id < 300000 GROUP BY c.city;
UPDATE orders SET amount = amount * 2 WHERE id BETWEEN 1 AND 50000;
DELETE FROM orders WHERE id > 900000;
SELECT count(*), round(sum(amount), 1) FROM orders;
.print '-- Statistics of the engine under the table.'
.timer off
SELECT name, value FROM bftree_stat('orders')
  WHERE name IN ('buffer_size', 'buffer_used', 'leaf_pages', 'tree_height',
                 'file_pages', 'cache_hits', 'cache_misses', 'leaf_reads',
                 'leaf_writes', 'evictions', 'merges', 'splits',
                 'page_promotions', 'record_promotions', 'io_mode', 'direct_io');
SELECT bftree_check('orders') AS integrity;
SQL
cat > "$DIR/reopen.sql" <<SQL
.load ./bftree
.timer on
.print '-- After reopening: the rows are read back from the data file.'
SELECT count(*), round(sum(amount), 1) FROM orders;
SELECT * FROM orders WHERE id = 7919;
SQL
echo "== sqlite3 $DB < $DIR/demo.sql"
sqlite3 "$DB" < "$DIR/demo.sql"
echo
echo "== files"
ls -l "$DIR" | grep -v '\.sql$'
echo
echo "== sqlite3 $DB < $DIR/reopen.sql"
sqlite3 "$DB" < "$DIR/reopen.sql"
