-- The shadow table <table>_bftree holding the number of the table's last
-- committed transaction: created, advanced only by commits that wrote the
-- table together with something else (an autocommit statement writes its
-- table alone and leaves the row as it was: its commit is atomic by
-- itself), renamed and dropped with the table, read-only in defensive mode,
-- and tables without it still work (bftree-only; checked by hand).
.load ./bftree
CREATE TABLE n(x);
INSERT INTO n VALUES(1), (2);
CREATE VIRTUAL TABLE t USING bftree(k INTEGER PRIMARY KEY, v);
SELECT 'changes after create', changes();
SELECT type, name, sql FROM sqlite_schema ORDER BY name;
SELECT 'created', rowid, hex(commit_id) FROM t_bftree;
INSERT INTO t VALUES(1, 'a'), (2, 'b');
SELECT 'autocommit', hex(commit_id) FROM t_bftree;
BEGIN;
INSERT INTO t VALUES(11, 'k');
COMMIT;
SELECT 'explicit, this table alone', hex(commit_id) FROM t_bftree;
BEGIN;
INSERT INTO t VALUES(3, 'c');
UPDATE n SET x = x + 1;
COMMIT;
SELECT 'changes after commit', changes(), total_changes();
SELECT 'explicit', hex(commit_id) FROM t_bftree;
BEGIN;
INSERT INTO t VALUES(4, 'd');
ROLLBACK;
SELECT 'rolled back', hex(commit_id) FROM t_bftree;
DELETE FROM t WHERE k = 99;
UPDATE n SET x = 0 WHERE 0;
SELECT 'nothing written', hex(commit_id) FROM t_bftree;
BEGIN;
INSERT INTO t VALUES(5, 'e');
DELETE FROM t WHERE k = 5;
COMMIT;
SELECT 'net nothing', hex(commit_id) FROM t_bftree;
CREATE VIRTUAL TABLE u USING bftree(k TEXT PRIMARY KEY);
BEGIN;
INSERT INTO u VALUES('x');
INSERT INTO t VALUES(6, 'f');
COMMIT;
SELECT 'two tables', (SELECT hex(commit_id) FROM t_bftree), (SELECT hex(commit_id) FROM u_bftree);
ALTER TABLE t RENAME TO t2;
SELECT name FROM sqlite_schema WHERE name LIKE 't%' ORDER BY name;
BEGIN; INSERT INTO t2 VALUES(7, 'g'); COMMIT;
SELECT 'renamed', hex(commit_id) FROM t2_bftree;
.dbconfig defensive on
UPDATE t2_bftree SET commit_id = x'00';
DELETE FROM t2_bftree;
DROP TABLE t2_bftree;
BEGIN; INSERT INTO t2 VALUES(8, 'h'); COMMIT;
SELECT 'defensive', hex(commit_id) FROM t2_bftree;
.dbconfig defensive off
-- a damaged shadow row is rewritten at the next commit
UPDATE t2_bftree SET commit_id = 'junk';
BEGIN; INSERT INTO t2 VALUES(9, 'i'); COMMIT;
SELECT 'repaired', rowid, hex(commit_id) FROM t2_bftree;
-- a table without its shadow table (as made before shadow tables existed)
DROP TABLE t2_bftree;
INSERT INTO t2 VALUES(10, 'j');
SELECT 'no shadow', count(*) FROM t2;
-- a name taken by another table refuses the CREATE
CREATE TABLE w_bftree(x);
CREATE VIRTUAL TABLE w USING bftree(k);
SELECT name FROM sqlite_schema WHERE name LIKE 'w%';
DROP TABLE w_bftree;
-- DROP TABLE removes the shadow table, ROLLBACK of the DROP keeps it
BEGIN;
DROP TABLE u;
SELECT 'dropping', count(*) FROM sqlite_schema WHERE name LIKE 'u%';
ROLLBACK;
SELECT 'drop rolled back', name FROM sqlite_schema WHERE name LIKE 'u%' ORDER BY name;
DROP TABLE t2;
DROP TABLE u;
SELECT 'left', name FROM sqlite_schema ORDER BY name;
-- reopened: the numbers survive
CREATE VIRTUAL TABLE r USING bftree(k INTEGER PRIMARY KEY, v);
INSERT INTO r VALUES(1, 'x');
BEGIN; INSERT INTO r VALUES(2, 'y'); COMMIT;
.open @TESTDIR@/test.db
.load ./bftree
SELECT 'reopened', hex(commit_id) FROM r_bftree;
BEGIN; INSERT INTO r VALUES(3, 'z'); COMMIT;
SELECT 'next', hex(commit_id) FROM r_bftree;
SELECT group_concat(k || v, ' ') FROM r;
