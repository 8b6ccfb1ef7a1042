-- Data many times larger than the buffer (buffer_size 256KiB, about 6 MiB of
-- rows): point and range queries, updates and deletes that reach evicted
-- leaves, and the data read back after reopening (native-blessed).
.load ./bftree
CREATE VIRTUAL TABLE big USING bftree(k INTEGER PRIMARY KEY, s TEXT, n INTEGER, buffer_size='256KiB');
BEGIN;
WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 60000)
INSERT INTO big SELECT (i * 7919) % 60013, printf('row-%06d-%s', i, substr('abcdefghijklmnopqrstuvwxyz', i % 26 + 1) || printf('%050d', i)), i FROM c;
COMMIT;
SELECT count(*), sum(n), min(k), max(k) FROM big;
SELECT k, s FROM big WHERE k = 12345;
SELECT k, n FROM big WHERE k IN (1, 2, 3, 59999, 60000, 60012, 70000);
SELECT count(*), sum(n) FROM big WHERE k BETWEEN 10000 AND 20000;
SELECT k FROM big WHERE k > 59990 ORDER BY k DESC;
SELECT k FROM big ORDER BY k LIMIT 5 OFFSET 30000;
UPDATE big SET n = -n WHERE k % 100 = 0;
SELECT count(*), sum(n) FROM big;
DELETE FROM big WHERE k BETWEEN 20000 AND 39999;
SELECT count(*), sum(n), sum(length(s)) FROM big;
UPDATE big SET k = k + 100000 WHERE k >= 40000;
SELECT count(*), min(k), max(k), sum(k) FROM big;
.open @TESTDIR@/test.db
.load ./bftree
SELECT count(*), sum(n), sum(length(s)), sum(k) FROM big;
SELECT k, s FROM big WHERE k = 140001;
