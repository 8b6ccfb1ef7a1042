-- Writing the table while scanning it: UPDATE/DELETE with range conditions,
-- key-changing UPDATEs over many rows (native-blessed).
.load ./bftree
CREATE VIRTUAL TABLE t USING bftree(k INTEGER PRIMARY KEY, v INTEGER, buffer_size='256KiB');
WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 2000)
INSERT INTO t SELECT i, i * 10 FROM c;
UPDATE t SET v = v + 1 WHERE k BETWEEN 100 AND 1500;
SELECT count(*), sum(v) FROM t;
DELETE FROM t WHERE k > 1800;
SELECT count(*), sum(v), max(k) FROM t;
DELETE FROM t WHERE k % 3 = 0;
SELECT count(*), sum(v) FROM t;
UPDATE t SET k = k + 100000;
SELECT count(*), min(k), max(k), sum(k) FROM t;
UPDATE t SET k = -k;
SELECT count(*), min(k), max(k), sum(k) FROM t;
UPDATE t SET k = k - 1;
SELECT count(*), min(k), max(k) FROM t;
UPDATE t SET k = k + 1;
UPDATE t SET k = -k - 200000 WHERE k < -100500;
SELECT count(*), min(k), max(k), sum(k) FROM t;
UPDATE t SET k = k * 2 WHERE k > 0;
SELECT count(*), min(k), max(k), sum(k) FROM t;
UPDATE OR REPLACE t SET k = k / 2 WHERE k > 0;
SELECT count(*), min(k), max(k), sum(k) FROM t;
UPDATE t SET v = k WHERE k IN (SELECT k FROM t WHERE k % 7 = 0);
SELECT count(*) FROM t WHERE v = k;
DELETE FROM t WHERE k IN (SELECT k FROM t ORDER BY k DESC LIMIT 10);
SELECT count(*), max(k) FROM t;
UPDATE t SET k = k + 1000000 WHERE k < 0;
SELECT count(*), min(k), max(k) FROM t;
UPDATE t SET v = (SELECT count(*) FROM t AS t2 WHERE t2.k < t.k) WHERE k < 300200;
SELECT sum(v) FROM t;
