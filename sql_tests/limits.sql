-- Size limits: keys over bf_max_key_size() and rows over
-- bf_max_record_size() are refused with SQLITE_TOOBIG, never truncated
-- (bftree-only; checked by hand).  page_size 4096: keys up to 512 bytes
-- encoded (tag byte + payload), key + record up to 1016 bytes.
.load ./bftree
CREATE VIRTUAL TABLE t USING bftree(k TEXT PRIMARY KEY, v BLOB);
INSERT INTO t VALUES(printf('%.511c', 'k'), 1);
INSERT INTO t VALUES(printf('%.512c', 'k'), 2);
SELECT length(k) FROM t;
INSERT INTO t VALUES('a', zeroblob(1000));
INSERT INTO t VALUES('b', zeroblob(1011));
INSERT INTO t VALUES('c', zeroblob(1010));
SELECT k, length(v) FROM t WHERE k IN ('a', 'b', 'c');
UPDATE t SET v = zeroblob(5000) WHERE k = 'a';
SELECT k, length(v) FROM t WHERE k = 'a';
INSERT OR IGNORE INTO t VALUES('d', zeroblob(5000));
SELECT count(*) FROM t WHERE k = 'd';
-- a bigger page allows bigger rows
CREATE VIRTUAL TABLE big USING bftree(k INTEGER PRIMARY KEY, v BLOB, page_size=32768);
INSERT INTO big VALUES(1, zeroblob(8000));
INSERT INTO big VALUES(2, zeroblob(9000));
SELECT k, length(v) FROM big;
