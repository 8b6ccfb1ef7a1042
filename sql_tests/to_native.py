#!/usr/bin/env python3
"""Rewrite a bftree SQL test script into the same script on native tables.

Used to generate the expected output of a test from a native WITHOUT ROWID
table (then checked by eye): sql_tests/bless.sh runs it.  Line numbers are
kept, so error messages ("near line N") match.

  CREATE VIRTUAL TABLE t USING bftree(cols..., opt=value...)
      -> CREATE TABLE t(cols...[, PRIMARY KEY(first)]) WITHOUT ROWID
  .load lines, and lines marked "-- bftree-only" are blanked.
"""
import re
import sys

CREATE = re.compile(r"CREATE\s+VIRTUAL\s+TABLE\s+(IF\s+NOT\s+EXISTS\s+)?(\S+)\s+USING\s+bftree\b\s*(\()?",
                    re.IGNORECASE)
OPTION = re.compile(r"^\s*[A-Za-z_][A-Za-z0-9_]*\s*=")


def split_args(text):
    """Split at top-level commas; return (args, index after closing paren)."""
    depth, args, cur, i, q = 0, [], "", 0, None
    while i < len(text):
        c = text[i]
        if q:
            cur += c
            if c == q:
                q = None
        elif c in "'\"`":
            q = c
            cur += c
        elif c == "[":
            q = "]"
            cur += c
        elif c == "(":
            depth += 1
            cur += c
        elif c == ")":
            if depth == 0:
                args.append(cur)
                return args, i + 1
            depth -= 1
            cur += c
        elif c == "," and depth == 0:
            args.append(cur)
            cur = ""
        else:
            cur += c
        i += 1
    raise SystemExit("unterminated bftree(...)")


def first_name(col):
    col = col.strip()
    if col[0] in "\"`[":
        end = {"\"": "\"", "`": "`", "[": "]"}[col[0]]
        return col[: col.index(end, 1) + 1]
    return re.match(r"[^\s]+", col).group(0)


def convert(sql):
    out, pos = "", 0
    for m in CREATE.finditer(sql):
        if m.start() < pos:
            continue
        if m.group(3):
            args, end = split_args(sql[m.end():])
        else:
            args, end = [], 0
        cols = [a.strip() for a in args if a.strip() and not OPTION.match(a)]
        if not cols:
            cols = ["key PRIMARY KEY", "value"]
        if not any(re.search(r"PRIMARY\s+KEY", c, re.IGNORECASE) for c in cols):
            cols.append("PRIMARY KEY(%s)" % first_name(cols[0]))
        out += sql[pos:m.start()]
        out += "CREATE TABLE %s%s(%s) WITHOUT ROWID" % (m.group(1) or "", m.group(2), ", ".join(cols))
        pos = m.end() + end
    out += sql[pos:]
    lines = []
    for line in out.split("\n"):
        if line.startswith(".load") or "-- bftree-only" in line:
            line = ""
        lines.append(line)
    return "\n".join(lines)


if __name__ == "__main__":
    sys.stdout.write(convert(open(sys.argv[1]).read()))
