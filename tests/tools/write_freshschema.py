"""Write storage/freshschema.py again from the migrations: the schema they leave in an empty database (sqlite_master's
SQL, in its order) and the rows they write there. Run it after adding a migration (tests/test_migrations_frozen.py
fails until then, saying so):

  .venv/bin/python tests/tools/write_freshschema.py          # writes storage/freshschema.py (then `ruff format`s it)
  .venv/bin/python tests/tools/write_freshschema.py --check  # exit 1 if the file is not what it would write

What SQLite makes by itself is left out, as a fresh database's creation makes it again: the automatic indexes
(sqlite_autoindex_*, no SQL), sqlite_sequence (made with the first AUTOINCREMENT table, at that place) and the
shadow tables of a virtual table (an FTS5 table's _data, _idx, _docsize, _config: made, with their first rows, by
its CREATE VIRTUAL TABLE)."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
TARGET = os.path.join(ROOT, "storage", "freshschema.py")

HEADER = '''"""The schema a new database is made with, at once, in one transaction (storage/schema.py
create_fresh, which `migrate` calls for a database of version 0 with nothing in it): what migrations 1 to VERSION
(storage/migrations.py) leave in an empty database, the SQL of sqlite_master in its order, and the rows they write
there. Running the migrations one by one, SQLite re-parses the schema after each statement that changes it (~30 ms of
CPU, every new home, every first start); this takes a few. A database made one way or the other is the same
(tests/test_migrations_frozen.py compares them).

WRITTEN BY tests/tools/write_freshschema.py FROM THE MIGRATIONS: never edit it by hand; run that after adding a
migration. (A VERSION behind SCHEMA_VERSION is never used: new databases are then migrated one by one.)"""
# ruff: noqa: E501

from __future__ import annotations
'''


def _migrated() -> sqlite3.Connection:
    from sessiond.storage.schema import migrate
    from sessiond.storage.sqliteconns import Inline

    conn = sqlite3.connect(":memory:", isolation_level=None)
    asyncio.run(migrate(Inline(conn), each=True))
    return conn


def _literal(sql: str) -> str:
    if "\\" in sql or '"""' in sql or sql.endswith('"') or any(line != line.rstrip() for line in sql.split("\n")):
        return repr(sql)  # (as a triple-quoted string it would not be the same text, or not a string at all)
    return '"""' + sql + '"""'


def render(conn: sqlite3.Connection) -> str:
    """The text of storage/freshschema.py for the database `conn` (migrated one by one)."""
    from sessiond.storage.migrations import SCHEMA_VERSION

    shadow = {r[1] for r in conn.execute("PRAGMA table_list") if r[2] == "shadow"}
    schema = [
        sql
        for name, sql in conn.execute("SELECT name, sql FROM sqlite_master ORDER BY rowid")
        if sql is not None and name != "sqlite_sequence" and name not in shadow
    ]
    tables = [
        r[1]
        for r in conn.execute("PRAGMA table_list")
        if r[0] == "main" and r[2] == "table" and not r[1].startswith("sqlite_schema")
    ]
    rows = []
    for table in sorted(tables):
        for row in conn.execute(f'SELECT * FROM "{table}"'):  # (in its key's order)
            marks = ", ".join("?" * len(row))
            rows.append(f'    ("INSERT INTO {table} VALUES ({marks})", {tuple(row)!r}),')
    made = sqlite3.connect(":memory:")  # (what the schema alone makes: a virtual table's shadow tables' first rows)
    for sql in schema:
        made.execute(sql)
    for table in sorted(shadow):  # (a migration's 'rebuild' or 'optimize' wrote others: those written over them)
        got = conn.execute(f'SELECT * FROM "{table}"').fetchall()
        if got != made.execute(f'SELECT * FROM "{table}"').fetchall():
            rows.append(f'    ("DELETE FROM {table}", ()),')
            rows += [f'    ("INSERT INTO {table} VALUES ({", ".join("?" * len(r))})", {tuple(r)!r}),' for r in got]
    made.close()
    pragmas = []
    for name in ("user_version", "application_id"):
        (value,) = conn.execute(f"PRAGMA {name}").fetchone()
        if value:
            pragmas.append(f"    ({name!r}, {value!r}),")
    out = [HEADER, f"VERSION = {SCHEMA_VERSION}", "", "# sqlite_master's SQL, in its order", "SCHEMA: list[str] = ["]
    out += [f"    {_literal(sql)}," for sql in schema]
    out += ["]", "", "# the rows the migrations write", "ROWS: list[tuple[str, tuple]] = ["]
    out += rows
    out += ["]", "", "# the PRAGMAs the migrations set (in the database file's header)"]
    out += ["PRAGMAS: list[tuple[str, int]] = ["]
    out += pragmas
    out += ["]", ""]
    return "\n".join(out)


def _formatted(text: str) -> str:
    ruff = os.path.join(os.path.dirname(sys.executable), "ruff")
    done = subprocess.run(
        [ruff, "format", "--stdin-filename", TARGET, "-"], input=text, capture_output=True, text=True, cwd=ROOT
    )
    if done.returncode:
        raise SystemExit(done.stderr)
    return done.stdout


def main(argv: list[str]) -> int:
    text = _formatted(render(_migrated()))
    if "--check" in argv:
        with open(TARGET) as f:
            same = f.read() == text
        print("storage/freshschema.py is " + ("up to date" if same else "stale: run tests/tools/write_freshschema.py"))
        return 0 if same else 1
    with open(TARGET, "w") as f:
        f.write(text)
    print(f"wrote {TARGET}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
