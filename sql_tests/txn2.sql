-- Engine transactions: a bftree table and a native table in one SQL
-- transaction; reads inside a transaction see its own writes (point
-- look-ups, range scans both ways, over rows changed, deleted and added);
-- savepoints nested three deep; constraint errors in the middle of
-- multi-row statements inside a transaction (native-blessed).
.load ./bftree
CREATE VIRTUAL TABLE t USING bftree(k INTEGER PRIMARY KEY, v TEXT NOT NULL);
CREATE TABLE n(k INTEGER PRIMARY KEY, v TEXT);
WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 20)
INSERT INTO t SELECT i * 10, 'v' || i FROM c;
INSERT INTO n SELECT k, v FROM t;
-- COMMIT keeps both tables' changes
BEGIN;
INSERT INTO t VALUES(5, 'five');
INSERT INTO n VALUES(5, 'five');
UPDATE t SET v = v || '+' WHERE k BETWEEN 40 AND 60;
DELETE FROM t WHERE k = 100;
DELETE FROM n WHERE k = 100;
SELECT 'in txn', group_concat(k || v, ' ') FROM t WHERE k < 80;
SELECT 'desc', group_concat(k, ' ') FROM (SELECT k FROM t WHERE k > 70 AND k <= 130 ORDER BY k DESC);
SELECT 'point', v FROM t WHERE k = 50;
SELECT 'gone', count(*) FROM t WHERE k = 100;
SELECT 'in', group_concat(k, ' ') FROM t WHERE k IN (5, 50, 100, 110);
COMMIT;
SELECT 'after commit', count(*), sum(k) FROM t;
SELECT 'native', count(*), sum(k) FROM n;
-- ROLLBACK undoes both
BEGIN;
INSERT INTO t VALUES(1, 'one'), (2, 'two');
INSERT INTO n VALUES(1, 'one');
UPDATE t SET k = k + 1000 WHERE k >= 150;
DELETE FROM t WHERE k < 30;
SELECT 'before rollback', group_concat(k, ' ') FROM t;
ROLLBACK;
SELECT 'after rollback', group_concat(k, ' ') FROM t;
SELECT 'native', count(*) FROM n WHERE k = 1;
-- savepoints three deep
BEGIN;
INSERT INTO t VALUES(301, 'a');
SAVEPOINT s1;
INSERT INTO t VALUES(302, 'b');
UPDATE t SET v = 'A' WHERE k = 301;
SAVEPOINT s2;
INSERT INTO t VALUES(303, 'c');
DELETE FROM t WHERE k = 302;
SAVEPOINT s3;
INSERT INTO t VALUES(304, 'd');
UPDATE t SET k = 305 WHERE k = 303;
SELECT 's3', group_concat(k || v, ' ') FROM t WHERE k > 300;
ROLLBACK TO s3;
SELECT 'to s3', group_concat(k || v, ' ') FROM t WHERE k > 300;
INSERT INTO t VALUES(306, 'e');
ROLLBACK TO s2;
SELECT 'to s2', group_concat(k || v, ' ') FROM t WHERE k > 300;
INSERT INTO t VALUES(307, 'f');
SAVEPOINT s3;
INSERT INTO t VALUES(308, 'g');
RELEASE s3;
ROLLBACK TO s1;
SELECT 'to s1', group_concat(k || v, ' ') FROM t WHERE k > 300;
SAVEPOINT s2;
INSERT INTO t VALUES(309, 'h');
SAVEPOINT s3;
INSERT INTO t VALUES(310, 'i');
RELEASE s2;
SELECT 'released', group_concat(k || v, ' ') FROM t WHERE k > 300;
ROLLBACK TO s1;
RELEASE s1;
INSERT INTO t VALUES(311, 'j');
COMMIT;
SELECT 'committed', group_concat(k || v, ' ') FROM t WHERE k > 300;
-- the same with the outermost savepoint opening the transaction
SAVEPOINT o;
INSERT INTO t VALUES(401, 'x');
SAVEPOINT m;
INSERT INTO t VALUES(402, 'y');
SAVEPOINT i;
INSERT INTO t VALUES(403, 'z');
ROLLBACK TO m;
SELECT 'to m', group_concat(k || v, ' ') FROM t WHERE k > 400;
ROLLBACK TO o;
SELECT 'to o', count(*) FROM t WHERE k > 400;
INSERT INTO t VALUES(404, 'w');
RELEASE o;
SELECT 'released o', group_concat(k || v, ' ') FROM t WHERE k > 400;
-- a constraint error in the middle of a multi-row statement inside a
-- transaction undoes that statement only
BEGIN;
INSERT INTO t VALUES(501, 'p');
INSERT INTO n VALUES(501, 'p');
INSERT INTO t VALUES(502, 'q'), (503, 'r'), (501, 'dup'), (504, 's');
SELECT 'after dup', group_concat(k || v, ' ') FROM t WHERE k > 500;
INSERT INTO t SELECT k + 500, 'copy' FROM t WHERE k BETWEEN 1 AND 10 OR k = 1;
INSERT INTO t SELECT k + 600, 'sel' FROM n WHERE k IN (5, 501, 10, 20);
SELECT 'after select', group_concat(k || v, ' ') FROM t WHERE k > 500;
UPDATE t SET k = k + 1 WHERE k BETWEEN 500 AND 620;
SELECT 'after update', group_concat(k || v, ' ') FROM t WHERE k > 500;
UPDATE t SET k = CASE WHEN k = 511 THEN 606 ELSE k + 1000 END, v = v || '!' WHERE k BETWEEN 500 AND 620;
DELETE FROM t WHERE k IN (502, 606) OR k = (SELECT 1/0 FROM n WHERE k = 501 AND 0);
SELECT 'after failed update', group_concat(k || v, ' ') FROM t WHERE k > 500;
INSERT INTO t VALUES(701, 'n1'), (702, NULL), (703, 'n3');
UPDATE t SET v = NULL WHERE k > 600;
SELECT 'after null', group_concat(k || v, ' ') FROM t WHERE k > 500;
INSERT OR IGNORE INTO t VALUES(501, 'ign'), (520, 'new');
INSERT OR REPLACE INTO t VALUES(501, 'rep'), (521, 'new2');
UPDATE OR IGNORE t SET k = 501 WHERE k IN (520, 521);
SELECT 'conflict clauses', group_concat(k || v, ' ') FROM t WHERE k > 500;
COMMIT;
SELECT 'final', group_concat(k || v, ' ') FROM t WHERE k > 500;
SELECT 'native', group_concat(k || v, ' ') FROM n WHERE k > 500;
SELECT 'all', count(*), sum(k), group_concat(v, '') FROM t;
