-- Where bftree knowingly differs from a native table (bftree-only; checked
-- by hand).  See ext/README-sql.md.
.load ./bftree
CREATE VIRTUAL TABLE r USING bftree(k INTEGER PRIMARY KEY, v);
INSERT INTO r VALUES(1, 'a'), (2, 'b'), (3, 'c'), (4, 'd'), (5, 'e');
-- 1. UPDATE OR REPLACE moving a row onto a key the same statement updates
--    later: native re-reads the moved row (result 6|b 7|a); bftree refuses.
UPDATE OR REPLACE r SET k = k + 2;
SELECT * FROM r;
--    without such a cascade it works as natively
UPDATE OR REPLACE r SET k = k + 10 WHERE k >= 4;
SELECT * FROM r;
-- 2. DIRECTONLY: no use from triggers or views
CREATE TABLE n(x);
CREATE TRIGGER tr AFTER INSERT ON n BEGIN INSERT INTO r VALUES(new.x, 'trig'); END;
INSERT INTO n VALUES(100);
CREATE VIEW vw AS SELECT * FROM r;
SELECT * FROM vw;
CREATE TRIGGER tr2 AFTER INSERT ON r BEGIN SELECT 1; END;
-- 3. DEFAULT is refused (SQLite passes NULL for an omitted column)
CREATE VIRTUAL TABLE d USING bftree(k, v DEFAULT 1);
-- 4. no rowid
SELECT rowid FROM r;
