-- INSERT OR REPLACE is a blind put: it does not read the key's leaf from
-- disk (the engine buffers the write), while a plain INSERT, OR IGNORE and
-- UPDATE must look.  leaf_reads counts the leaf pages read from disk.
.load ./bftree
CREATE VIRTUAL TABLE t USING bftree(k INTEGER PRIMARY KEY, v, buffer_size='1MiB', page_size=4096);
WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 20000)
INSERT INTO t SELECT i, printf('%040d', i) FROM c;
-- reopen: the engine closes (checkpoint) and the buffer starts empty
.open @TESTDIR@/test.db
.load ./bftree
CREATE TEMP TABLE reads(label, n);
CREATE TEMP VIEW leaf_reads AS SELECT value AS n FROM bftree_stat('t') WHERE name = 'leaf_reads';
INSERT INTO reads SELECT 'start', n FROM leaf_reads;
-- an existing key, a new key, several rows in one statement, REPLACE INTO
INSERT OR REPLACE INTO t VALUES(12345, 'replaced');
INSERT OR REPLACE INTO t VALUES(30001, 'new');
INSERT OR REPLACE INTO t VALUES(777, 'a'), (15000, 'b'), (30002, 'c');
REPLACE INTO t VALUES(4321, 'plain replace');
SELECT 'replace reads', (SELECT n FROM leaf_reads) - n FROM reads WHERE label = 'start';
-- the statements that must look do read, from a cold buffer again: a plain
-- INSERT of a new key, OR IGNORE of an existing key (which keeps the row),
-- an UPDATE
.open @TESTDIR@/test.db
.load ./bftree
CREATE TEMP TABLE reads(label, n);
CREATE TEMP VIEW leaf_reads AS SELECT value AS n FROM bftree_stat('t') WHERE name = 'leaf_reads';
INSERT INTO reads SELECT 'before', n FROM leaf_reads;
INSERT INTO t VALUES(30003, 'x');
SELECT 'insert reads', (SELECT n FROM leaf_reads) - n > 0 FROM reads WHERE label = 'before';
DELETE FROM reads WHERE label = 'before';
INSERT INTO reads SELECT 'before', n FROM leaf_reads;
INSERT OR IGNORE INTO t VALUES(5555, 'ignored');
SELECT 'ignore reads', (SELECT n FROM leaf_reads) - n > 0 FROM reads WHERE label = 'before';
SELECT v FROM t WHERE k = 5555;
DELETE FROM reads WHERE label = 'before';
INSERT INTO reads SELECT 'before', n FROM leaf_reads;
UPDATE t SET v = 'updated' WHERE k = 9999;
SELECT 'update reads', (SELECT n FROM leaf_reads) - n > 0 FROM reads WHERE label = 'before';
SELECT v FROM t WHERE k = 9999;
-- the rows are there, and the replaced ones are replaced, not duplicated
SELECT k, v FROM t WHERE k IN (777, 4321, 12345, 15000, 30001, 30002) ORDER BY k;
SELECT count(*) FROM t;
-- a plain INSERT of an existing key still fails, after a blind REPLACE too
INSERT INTO t VALUES(12345, 'dup');
SELECT v FROM t WHERE k = 12345;
-- inside a transaction, rolled back: the old rows come back
BEGIN;
REPLACE INTO t VALUES(100, 'in txn'), (30004, 'in txn');
SELECT k, v FROM t WHERE k IN (100, 30004);
ROLLBACK;
SELECT k, v FROM t WHERE k IN (100, 30004);
-- a multi-row REPLACE with a key twice: the last row wins
INSERT OR REPLACE INTO t VALUES(200, 'first'), (200, 'second');
SELECT k, v FROM t WHERE k = 200;
-- UPDATE OR REPLACE moving a row onto an existing key, from a cold buffer:
-- the row at the target key goes, the moved row takes its place
.open @TESTDIR@/test.db
.load ./bftree
SELECT count(*) FROM t;
UPDATE OR REPLACE t SET k = 301 WHERE k = 300;
SELECT k, v FROM t WHERE k IN (300, 301);
SELECT count(*) FROM t;
-- the blind writes survive a reopen (checkpoint at close, then disk reads)
.open @TESTDIR@/test.db
.load ./bftree
SELECT k, v FROM t WHERE k IN (777, 4321, 12345, 15000, 30001, 30002) ORDER BY k;
SELECT count(*) FROM t;
SELECT bftree_check('t');
