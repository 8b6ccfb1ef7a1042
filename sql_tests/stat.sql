-- bftree_stat() and bftree_check() (bftree-only; checked by hand).
.load ./bftree
CREATE VIRTUAL TABLE t USING bftree(k INTEGER PRIMARY KEY, v, buffer_size='1MiB', page_size=4096);
WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 20000)
INSERT INTO t SELECT i, printf('%040d', i) FROM c;
SELECT group_concat(name, ' ') FROM bftree_stat('t');
SELECT name, value FROM bftree_stat('t') WHERE name IN ('page_size', 'buffer_size', 'max_key_size', 'max_record_size');
SELECT value > 100, typeof(value) FROM bftree_stat('t') WHERE name = 'leaf_pages';
SELECT value >= 1 FROM bftree_stat('t') WHERE name = 'tree_height';
SELECT value LIKE '%test.db-t.bftree' FROM bftree_stat('t') WHERE name = 'file';
SELECT count(*) FROM bftree_stat('main.t');
SELECT count(*) > 30 FROM bftree_stat WHERE tbl = 't';
SELECT bftree_check('t');
SELECT bftree_check('main.t');
-- a table this connection has not used yet is connected on demand
.open @TESTDIR@/test.db
.load ./bftree
SELECT bftree_check('t');
SELECT value FROM bftree_stat('t') WHERE name = 'page_size';
-- errors
SELECT * FROM bftree_stat;
SELECT * FROM bftree_stat('nope');
SELECT bftree_check('nope');
CREATE TABLE native(x);
SELECT bftree_check('native');
SELECT * FROM bftree_stat(NULL);
SELECT bftree_check(NULL);
CREATE VIEW v AS SELECT * FROM bftree_stat('t');
SELECT * FROM v;
-- bftree_checkpoint: merge the buffered writes and empty the log now
.open @TESTDIR@/ck.db
.load ./bftree
CREATE VIRTUAL TABLE c USING bftree(k INTEGER PRIMARY KEY, v);
INSERT INTO c VALUES(1, 'one'), (2, 'two');
SELECT name, value FROM bftree_stat('c') WHERE name IN ('checkpoints', 'merges');
SELECT 'log holds the commit', value > 0 FROM bftree_stat('c') WHERE name = 'wal_bytes';
SELECT bftree_checkpoint('c');
SELECT name, value FROM bftree_stat('c') WHERE name IN ('checkpoints', 'merges', 'wal_bytes');
SELECT * FROM c;
SELECT bftree_checkpoint('main.c');
SELECT bftree_checkpoint('nope');
SELECT bftree_checkpoint(NULL);
CREATE VIEW vc AS SELECT bftree_checkpoint('c');
SELECT * FROM vc;
