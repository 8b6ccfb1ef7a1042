-- Data files: default names beside the database, persistence across
-- reopening, sharing between connections, another process (busy), ALTER
-- TABLE RENAME, DROP TABLE, file= (relative to the database's directory),
-- a file that is not a bftree file, in-memory and temporary databases.
.load ./bftree
CREATE VIRTUAL TABLE t USING bftree(k INTEGER PRIMARY KEY, v);
CREATE VIRTUAL TABLE "odd name/x" USING bftree(k, v);
CREATE VIRTUAL TABLE f USING bftree(k, v, file='data/f.bft');
CREATE VIRTUAL TABLE f USING bftree(k, v, file='f.bft');
INSERT INTO t VALUES(1, 'one'), (2, 'two');
INSERT INTO "odd name/x" VALUES('a', 1);
INSERT INTO f VALUES('x', 'in f.bft');
.shell ls @TESTDIR@
-- another process finds the files in use
.shell sqlite3 @TESTDIR@/test.db ".load ./bftree" "SELECT * FROM t" 2>&1 | sed 's#@TESTDIR@#TESTDIR#'
-- reopen: the rows are back
.open @TESTDIR@/test.db
.load ./bftree
SELECT * FROM t;
SELECT * FROM "odd name/x";
SELECT * FROM f;
-- a second connection of this process shares the tree
ATTACH '@TESTDIR@/test.db' AS again;
INSERT INTO again.t VALUES(3, 'three');
SELECT * FROM main.t;
DETACH again;
-- the other process can use the files once this one has closed them
.open @TESTDIR@/other.db
.shell sqlite3 @TESTDIR@/test.db ".load ./bftree" "SELECT * FROM t" "SELECT bftree_check('t')"
.open @TESTDIR@/test.db
.load ./bftree
-- rename: the default-named data file follows the table; file= stays
ALTER TABLE t RENAME TO t2;
ALTER TABLE f RENAME TO f2;
SELECT * FROM t2;
SELECT * FROM f2;
.shell ls @TESTDIR@
.open @TESTDIR@/test.db
.load ./bftree
SELECT * FROM t2;
SELECT * FROM f2;
-- drop removes the data file
DROP TABLE t2;
DROP TABLE f2;
DROP TABLE "odd name/x";
.shell ls @TESTDIR@
CREATE VIRTUAL TABLE t2 USING bftree(k INTEGER PRIMARY KEY, v);
SELECT count(*) FROM t2;
-- a file that is not a bftree file is refused and left alone
.shell printf 'precious data, not a tree' > @TESTDIR@/precious.txt
CREATE VIRTUAL TABLE p USING bftree(k, file='precious.txt');
.shell cat @TESTDIR@/precious.txt; echo
-- an empty existing file is fine
.shell touch @TESTDIR@/empty.bft
CREATE VIRTUAL TABLE e USING bftree(k, file='empty.bft');
INSERT INTO e VALUES(1);
SELECT * FROM e;
-- a missing data file is reported when the table is used, and it can be dropped
.shell rm @TESTDIR@/empty.bft
.open @TESTDIR@/test.db
.load ./bftree
SELECT * FROM e;
DROP TABLE e;
-- two tables cannot share one data file
CREATE VIRTUAL TABLE s1 USING bftree(k, file='shared.bft');
CREATE VIRTUAL TABLE s2 USING bftree(k, file='shared.bft');
INSERT INTO s1 VALUES(1);
SELECT * FROM s1;
DROP TABLE s1;
-- in-memory database: an anonymous temporary file, kept across rename
.open :memory:
.load ./bftree
CREATE VIRTUAL TABLE m USING bftree(k TEXT PRIMARY KEY, v);
INSERT INTO m VALUES('a', 1), ('b', 2);
ALTER TABLE m RENAME TO m2;
SELECT * FROM m2;
SELECT value FROM bftree_stat('m2') WHERE name = 'file';
CREATE VIRTUAL TABLE temp.tt USING bftree(x);
INSERT INTO tt VALUES(42);
SELECT * FROM temp.tt;
DROP TABLE tt;
DROP TABLE m2;
.shell ls @TESTDIR@
