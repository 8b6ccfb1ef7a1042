-- Basic use: create, insert, select, update, delete (native-blessed).
.load ./bftree
.headers off
CREATE VIRTUAL TABLE t USING bftree(id INTEGER PRIMARY KEY, name TEXT, score REAL, tag);
INSERT INTO t VALUES(3, 'carol', 7.5, x'0102');
INSERT INTO t VALUES(1, 'alice', 9, NULL);
INSERT INTO t(id, name) VALUES(2, 'bob');
INSERT INTO t VALUES(10, 'dave', '8.25', 'x');
SELECT * FROM t;
SELECT id, typeof(score), score, quote(tag) FROM t;
SELECT count(*), sum(id), min(name), max(name) FROM t;
SELECT name FROM t WHERE id = 3;
SELECT name FROM t WHERE id = 4;
SELECT name FROM t WHERE name > 'b' ORDER BY name;
SELECT name FROM t ORDER BY id DESC;
SELECT name FROM t ORDER BY id DESC, name;
SELECT changes();
UPDATE t SET score = score + 1 WHERE id < 3;
SELECT changes();
SELECT id, score FROM t;
UPDATE t SET name = upper(name);
SELECT * FROM t;
UPDATE t SET id = id * 100 WHERE id = 10;
SELECT id, name FROM t;
DELETE FROM t WHERE id = 2;
SELECT changes();
DELETE FROM t WHERE id = 2;
SELECT changes();
SELECT id FROM t;
DELETE FROM t;
SELECT count(*) FROM t;
INSERT INTO t VALUES(1, 'again', 1, 1);
SELECT * FROM t;
-- no columns: (key PRIMARY KEY, value)
CREATE VIRTUAL TABLE kv USING bftree;
INSERT INTO kv VALUES('b', 2), ('a', 1), (3, 'three');
SELECT key, value FROM kv;
-- no PRIMARY KEY: the first column is the key
CREATE VIRTUAL TABLE f USING bftree(a, b);
INSERT INTO f VALUES(1, 1);
INSERT INTO f VALUES(1, 2);
INSERT INTO f VALUES(2, 1);
SELECT * FROM f;
-- the key column need not be first
CREATE VIRTUAL TABLE g USING bftree(a, b TEXT PRIMARY KEY, c);
INSERT INTO g VALUES(1, 'z', 1), (2, 'y', 2);
INSERT INTO g VALUES(3, 'z', 3);
SELECT * FROM g;
SELECT * FROM g WHERE b = 'y';
-- joins with native tables
CREATE TABLE n(x INTEGER, label TEXT);
INSERT INTO n VALUES(1, 'one'), (5, 'five'), (2, 'two');
SELECT n.label, g.b FROM n JOIN g ON g.a = n.x ORDER BY n.x;
SELECT n.label, t.name FROM n LEFT JOIN t ON t.id = n.x ORDER BY n.x;
SELECT key FROM kv WHERE key IN (SELECT label FROM n) OR key = 'a';
