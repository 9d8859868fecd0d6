"""A migration that ran on users' homes is never edited: a home that ran the old text keeps what it made, and the
next migration may fail on it or leave it different from a fresh one (migration 9 was once edited in place: a home
that ran the first text could later be opened by no version; storage/schema.py repairs those). A change to the
schema is a new migration. Each migration's SQL (as the code makes it: some are built by helpers, such as
storage/contexttotals.py's) is pinned here by its digest; a new migration appends its digest.

A new database is not migrated one by one but made at once from storage/freshschema.py, the schema the migrations
leave: written from them by tests/tools/write_freshschema.py, and compared here with a database they make."""

from __future__ import annotations

import hashlib
import sqlite3

from sessiond.storage import freshschema
from sessiond.storage.database import Database
from sessiond.storage.migrations import MIGRATIONS, SCHEMA_VERSION
from sessiond.storage.schema import create_fresh, migrate
from sessiond.storage.sqliteconns import Inline

REWRITE = "run `.venv/bin/python tests/tools/write_freshschema.py` (it writes storage/freshschema.py from them)"

PINNED = [
    "ca8fd1f7db96074c",
    "1184094e99c1a855",
    "0057222bb68dd8a4",
    "507e08a899c49b85",
    "a0cd35864737458a",
    "a1be2fb4c957201d",
    "b0e0b9dc65c7185a",
    "ea98e7a5987b02af",
    "51ba13486a2645b6",
    "f893f9828b83dc78",
    "d05d0372b67ce785",
    "203e479302b2c985",
    "9f0b9647247a5e48",
    "c47ecd7c342bb8e5",
    "9c5c42a53c1c28bf",
    "6bee966cf12cd375",
    "f3014060eb12cb5a",
    "543bf6e7f5f99cdd",
    "2326fbbde35f0e0f",
    "6081b16bd180da04",
    "5ae53f3cd18fee51",
    "544ff0fb7fcfc2a7",
    "6af935974356232d",
    "7ab042fa22e46486",
    "23157597c1e8a251",  # (25 edited once before any release took it: its fill leaves out chats whose times overflow)
    "20188e75ade93f8f",
    "03a04bd5b3ee3788",
    "1cb9c38d7f04cdab",  # (28: slot_objects.gone_at)
    "dfadc80106ae9d19",  # (29: head_lies)
    "6ce905ac890c9dcc",  # (30: sync_state.head_manifest, logs_seen)
    "40c9894170c08c41",  # (31: sync_state.head_announce)
    "dcbd6e7cf8552fd4",  # (32: claims_walks)
    "362d8e7931b2b71b",  # (33: tokens_used recounted as 0.37.0 charges)
    "efc98db807fe2474",  # (34: a fork's copied_tokens 0.36.0 counted, recounted)
    "1cb274830b50e4aa",  # (35: pulled extras as a pull keeps them; edited before any release took it: json_remove)
    "f5df4e41773e0b97",  # (36: a message's context_tokens counted in its chat's context)
    "0ac61ab74e5338de",  # (37: openai_choices)
    "7205b3f13e5fa281",  # (38: a usage or response 35 set as a string on SQLite 3.54.1 an object again)
    "df967a4f28b132fb",  # (39: openai_made)
    "b640e75981217be0",  # (40: a session's or a chat's policy values the API would not take, from a pull, dropped;
    # edited before any release took it: a whole number written as a fraction kept as the number)
]


def test_no_migration_that_ran_is_edited():
    got = [hashlib.sha256(m.encode()).hexdigest()[:16] for m in MIGRATIONS]
    edited = [i + 1 for i, (a, b) in enumerate(zip(got, PINNED)) if a != b]
    assert not edited, (
        f"migration(s) {edited} changed: homes that ran them keep the old text; make the change a new migration"
    )
    assert len(got) >= len(PINNED), "a migration was taken out: homes at its version would skip the next one"
    assert len(got) == len(PINNED), (
        f"new migration(s) {list(range(len(PINNED) + 1, len(got) + 1))}: pin them here, and {REWRITE}"
    )


# Values a database draws at random, its own, left out of the comparison: meta's device_id (written by the open, after
# the schema) and text_gens.gen (random(), one per session: a new database has none).
OWN = {"meta": "key = 'device_id'", "text_gens": "1"}
PRAGMAS = ("user_version", "application_id", "auto_vacuum", "page_size", "encoding", "journal_mode", "integrity_check")


def _contents(path: str) -> tuple[list, dict, dict]:
    conn = sqlite3.connect(path)
    try:
        master = conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY rowid").fetchall()
        tables = [r[1] for r in conn.execute("PRAGMA table_list") if r[0] == "main" and r[2] in ("table", "shadow")]
        rows = {
            t: conn.execute(f'SELECT * FROM "{t}" WHERE NOT ({OWN.get(t, "0")})').fetchall()
            for t in tables
            if t != "sqlite_schema"
        }
        return master, rows, {p: conn.execute(f"PRAGMA {p}").fetchall() for p in PRAGMAS}
    finally:
        conn.close()


async def test_a_new_database_is_made_as_the_migrations_make_it(tmp_path):
    """One made at once (create_fresh: storage/freshschema.py) and one made by every migration in turn have the same
    sqlite_master (type, name, table, SQL, in order: what a later migration's ALTER sees), the same rows in every
    table (the FTS index's own too) and the same PRAGMAs; Database.open makes a new database so (the same again, its
    device id aside), at once (its schema cookie, which counts the statements that changed the schema, is
    create_fresh's)."""
    assert freshschema.VERSION == SCHEMA_VERSION, (
        f"storage/freshschema.py makes schema {freshschema.VERSION}, not {SCHEMA_VERSION}: new databases are migrated "
        f"one by one (~30 ms more each); {REWRITE}"
    )
    made = {}
    for how in ("each", "fresh"):
        made[how] = path = str(tmp_path / f"{how}.db")
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")  # (as Connections.open sets it)
        await (migrate(Inline(conn), each=True) if how == "each" else create_fresh(Inline(conn)))
        conn.close()
    each, fresh = _contents(made["each"]), _contents(made["fresh"])
    for i, what in enumerate(("sqlite_master", "rows", "PRAGMAs")):
        assert fresh[i] == each[i], f"a new database's {what} differ from the migrations': {REWRITE}"
    assert each[1]["schema_version"] == [(SCHEMA_VERSION,)] and each[2]["integrity_check"] == [("ok",)]
    for path in (made["each"], str(tmp_path / "opened.db")):  # (a device id written into each, as at a first start)
        db = await Database.open(path)
        assert await db.schema_version() == SCHEMA_VERSION
        await db.close()
    assert _contents(str(tmp_path / "opened.db")) == _contents(made["each"])
    cookies = {}
    for name in ("each", "fresh", "opened"):
        conn = sqlite3.connect(str(tmp_path / f"{name}.db"))
        cookies[name] = conn.execute("PRAGMA schema_version").fetchall()
        conn.close()
    assert cookies["opened"] == cookies["fresh"] != cookies["each"], cookies
