-- Transactions and savepoints: ROLLBACK, ROLLBACK TO, RELEASE, statement
-- atomicity of failing multi-row statements (native-blessed).
.load ./bftree
CREATE VIRTUAL TABLE t USING bftree(k INTEGER PRIMARY KEY, v);
INSERT INTO t VALUES(1, 'a'), (2, 'b'), (3, 'c');
BEGIN;
INSERT INTO t VALUES(4, 'd');
UPDATE t SET v = 'B' WHERE k = 2;
DELETE FROM t WHERE k = 1;
UPDATE t SET k = 30 WHERE k = 3;
SELECT group_concat(k || v, ' ') FROM t;
ROLLBACK;
SELECT group_concat(k || v, ' ') FROM t;
BEGIN;
INSERT INTO t VALUES(10, 'x');
SAVEPOINT s1;
INSERT INTO t VALUES(11, 'y');
DELETE FROM t WHERE k < 3;
SAVEPOINT s2;
UPDATE t SET k = k + 100;
SELECT group_concat(k || v, ' ') FROM t;
ROLLBACK TO s2;
SELECT group_concat(k || v, ' ') FROM t;
ROLLBACK TO s1;
SELECT group_concat(k || v, ' ') FROM t;
INSERT INTO t VALUES(12, 'z');
RELEASE s1;
COMMIT;
SELECT group_concat(k || v, ' ') FROM t;
-- savepoint outside BEGIN
SAVEPOINT outer1;
INSERT INTO t VALUES(20, 'p');
SAVEPOINT inner1;
INSERT INTO t VALUES(21, 'q');
ROLLBACK TO inner1;
INSERT INTO t VALUES(22, 'r');
RELEASE outer1;
SELECT group_concat(k || v, ' ') FROM t;
SAVEPOINT sp;
DELETE FROM t;
ROLLBACK TO sp;
ROLLBACK TO sp;
RELEASE sp;
SELECT group_concat(k || v, ' ') FROM t;
-- a savepoint opened before the table's first change
BEGIN;
SAVEPOINT a;
SAVEPOINT b;
INSERT INTO t VALUES(30, 's');
ROLLBACK TO a;
SELECT group_concat(k || v, ' ') FROM t;
COMMIT;
-- failing multi-row statements leave no trace (ABORT), in autocommit ...
INSERT INTO t VALUES(40, 'm'), (41, 'n'), (1, 'dup');
UPDATE t SET k = k + 1 WHERE k >= 10;
UPDATE t SET v = v || '!', k = CASE WHEN k = 22 THEN 1 ELSE k END;
SELECT group_concat(k || v, ' ') FROM t;
-- ... and inside a transaction (the transaction goes on)
BEGIN;
INSERT INTO t VALUES(50, 'o');
INSERT INTO t VALUES(51, 'p'), (52, 'q'), (50, 'dup');
UPDATE t SET k = k + 1 WHERE k >= 10;
DELETE FROM t WHERE k = 2;
UPDATE t SET v = v || '?', k = CASE WHEN k = 50 THEN 3 ELSE k END WHERE k > 1;
SELECT group_concat(k || v, ' ') FROM t;
COMMIT;
SELECT group_concat(k || v, ' ') FROM t;
-- OR ROLLBACK undoes the whole transaction
BEGIN;
INSERT INTO t VALUES(60, 'gone');
UPDATE t SET v = 'gone' WHERE k = 1;
INSERT OR ROLLBACK INTO t VALUES(1, 'dup');
SELECT group_concat(k || v, ' ') FROM t;
COMMIT;
-- FAIL keeps the rows changed before the failure
INSERT OR FAIL INTO t VALUES(70, 'f'), (71, 'g'), (1, 'dup'), (72, 'h');
SELECT group_concat(k || v, ' ') FROM t;
BEGIN;
UPDATE OR FAIL t SET k = k + 1 WHERE k >= 70;
SELECT group_concat(k || v, ' ') FROM t;
ROLLBACK;
SELECT group_concat(k || v, ' ') FROM t;
-- two tables in one transaction
CREATE VIRTUAL TABLE u USING bftree(k TEXT PRIMARY KEY, n INTEGER);
BEGIN;
INSERT INTO u VALUES('x', 1);
INSERT INTO t VALUES(80, 'with-u');
ROLLBACK;
SELECT count(*) FROM u;
SELECT count(*) FROM t WHERE k = 80;
