-- Options and column definitions: what is accepted, what is refused and the
-- error messages (bftree-only; checked by hand).
.load ./bftree
CREATE VIRTUAL TABLE a1 USING bftree(k, buffer_size='64MiB', page_size=8192, synchronous='full');
CREATE VIRTUAL TABLE a2 USING bftree(k, buffer_size='1GiB', synchronous=off);
CREATE VIRTUAL TABLE a3 USING bftree(k, buffer_size='65536', page_size='512', synchronous="NORMAL");
CREATE VIRTUAL TABLE a4 USING bftree(k, buffer_size = '2 M', BUFFER_SIZE2 = 1);
CREATE VIRTUAL TABLE a5 USING bftree(k, Buffer_Size='100KB');
CREATE VIRTUAL TABLE a6 USING bftree(k, buffer_size='1G', page_size=32768);
SELECT name, value FROM bftree_stat('a1') WHERE name IN ('page_size', 'buffer_size', 'max_key_size', 'max_record_size');
SELECT name, value FROM bftree_stat('a2') WHERE name IN ('page_size', 'buffer_size');
SELECT name, value FROM bftree_stat('a3') WHERE name IN ('page_size', 'buffer_size', 'max_key_size', 'max_record_size');
SELECT name, value FROM bftree_stat('a5') WHERE name IN ('buffer_size');
SELECT name, value FROM bftree_stat('a6') WHERE name IN ('page_size', 'buffer_size');
-- bad values
CREATE VIRTUAL TABLE b USING bftree(k, buffer_size='12XB');
CREATE VIRTUAL TABLE b USING bftree(k, buffer_size='');
CREATE VIRTUAL TABLE b USING bftree(k, buffer_size=0);
CREATE VIRTUAL TABLE b USING bftree(k, buffer_size='-5MiB');
CREATE VIRTUAL TABLE b USING bftree(k, buffer_size='1.5GiB');
CREATE VIRTUAL TABLE b USING bftree(k, buffer_size='99999999999999999999');
CREATE VIRTUAL TABLE b USING bftree(k, buffer_size='1KiB');
CREATE VIRTUAL TABLE b USING bftree(k, buffer_size=8K);
CREATE VIRTUAL TABLE b USING bftree(k, page_size=1000);
CREATE VIRTUAL TABLE b USING bftree(k, page_size=256);
CREATE VIRTUAL TABLE b USING bftree(k, page_size=65536);
CREATE VIRTUAL TABLE b USING bftree(k, page_size='4k');
CREATE VIRTUAL TABLE b USING bftree(k, synchronous='sometimes');
CREATE VIRTUAL TABLE b USING bftree(k, synchronous=1);
CREATE VIRTUAL TABLE b USING bftree(k, file='');
CREATE VIRTUAL TABLE b USING bftree(k, cache_size=10);
CREATE VIRTUAL TABLE b USING bftree(k, page_size=4096, page_size=4096);
-- column definitions
CREATE VIRTUAL TABLE c USING bftree(k, v, k);
CREATE VIRTUAL TABLE c USING bftree(a PRIMARY KEY, b PRIMARY KEY);
CREATE VIRTUAL TABLE c USING bftree(a, b, PRIMARY KEY(a, b));
CREATE VIRTUAL TABLE c USING bftree(k TEXT COLLATE NOCASE PRIMARY KEY);
CREATE VIRTUAL TABLE c USING bftree(k TEXT PRIMARY KEY COLLATE RTRIM);
CREATE VIRTUAL TABLE c USING bftree(k CHECK (k > 0));
CREATE VIRTUAL TABLE c USING bftree(k, v UNIQUE);
CREATE VIRTUAL TABLE c USING bftree(k, v REFERENCES p(x));
CREATE VIRTUAL TABLE c USING bftree(k, v, FOREIGN KEY(v) REFERENCES p(x));
CREATE VIRTUAL TABLE c USING bftree(k, v DEFAULT 3);
CREATE VIRTUAL TABLE c USING bftree(k PRIMARY KEY ON CONFLICT REPLACE);
CREATE VIRTUAL TABLE c USING bftree(k INTEGER PRIMARY KEY AUTOINCREMENT);
CREATE VIRTUAL TABLE c USING bftree(k, v AS (k + 1));
CREATE VIRTUAL TABLE c2 USING bftree(k, v INTEGER NOT NULL NOT NULL);
INSERT INTO c2 VALUES(1, NULL);
CREATE VIRTUAL TABLE c USING bftree(k, v syntax error ());
-- accepted: a key declared as a table constraint, names that look like keywords when quoted
CREATE VIRTUAL TABLE d1 USING bftree(a, b, PRIMARY KEY(b));
INSERT INTO d1 VALUES(1, 2), (1, 3);
SELECT * FROM d1;
CREATE VIRTUAL TABLE d2 USING bftree("check" TEXT, "default" INT, conflict, "file=x" PRIMARY KEY);
INSERT INTO d2 VALUES('c', '5', 'x', 'f');
SELECT *, typeof("default") FROM d2;
CREATE VIRTUAL TABLE d3 USING bftree(k TEXT PRIMARY KEY COLLATE BINARY, v TEXT COLLATE NOCASE);
INSERT INTO d3 VALUES('a', 'X'), ('B', 'y');
SELECT k FROM d3 WHERE v = 'x';
SELECT k FROM d3 ORDER BY k;
SELECT k FROM d3 ORDER BY v;
-- wal_size_limit: the log size past which a commit checkpoints (after the
-- commit, outside the table's writer lock); default 64MiB
CREATE VIRTUAL TABLE w1 USING bftree(k INTEGER PRIMARY KEY, v, wal_size_limit='64KiB');
CREATE VIRTUAL TABLE w2 USING bftree(k INTEGER PRIMARY KEY, v);
WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 2000)
INSERT INTO w1 SELECT i, printf('%0100d', i) FROM c;
WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 2000)
INSERT INTO w2 SELECT i, printf('%0100d', i) FROM c;
SELECT name, value FROM bftree_stat('w1') WHERE name IN ('commits', 'checkpoints');
SELECT 'w1 log emptied', value < 65536 FROM bftree_stat('w1') WHERE name = 'wal_bytes';
SELECT name, value FROM bftree_stat('w2') WHERE name IN ('commits', 'checkpoints');
SELECT 'w2 log kept', value > 200000 FROM bftree_stat('w2') WHERE name = 'wal_bytes';
INSERT INTO w1 VALUES(2001, 'x');
SELECT name, value FROM bftree_stat('w1') WHERE name IN ('commits', 'checkpoints');
SELECT count(*), sum(length(v)) FROM w1;
SELECT bftree_check('w1');
CREATE VIRTUAL TABLE b USING bftree(k, wal_size_limit='63KiB');
CREATE VIRTUAL TABLE b USING bftree(k, wal_size_limit='lots');
CREATE VIRTUAL TABLE b USING bftree(k, wal_size_limit='1MiB', wal_size_limit='2MiB');
-- a commit that wrote nothing does not checkpoint: here it is committed
-- first, while the same file's writing declaration holds the tree prepared
CREATE VIRTUAL TABLE w3 USING bftree(k INTEGER PRIMARY KEY, v, wal_size_limit='64KiB');
CREATE VIRTUAL TABLE temp.w3b USING bftree(k INTEGER PRIMARY KEY, v, file='@TESTDIR@/test.db-w3.bftree');
BEGIN;
INSERT INTO w3b SELECT 1, 2 WHERE 0;
WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 2000)
INSERT INTO w3 SELECT i, printf('%0100d', i) FROM c;
COMMIT;
SELECT name, value FROM bftree_stat('w3') WHERE name IN ('commits', 'checkpoints');
SELECT count(*) FROM w3b;
