"""The guess a refusal of an unknown session id carries (storage/unknown.py), on a home of many sessions: it names
the session meant for an id mistyped anywhere in it (a character changed, left out or added, at its start or its
end), cut short, or given as the session's name, and it reads a bounded number of rows to do so. The refusal of an
append is made inside its write transaction, which every other write waits for: the first version read every
session's id and name into Python and ran difflib over them (~120 ms with 10,000 sessions, each refused append
holding every writer that long)."""

from __future__ import annotations

import asyncio
import random
import sqlite3
import string

from sessiond.storage.unknown import no_session


class _Counted:
    """An async fetchall over a sqlite3 connection (the shape storage/unknown.py reads through), counting rows."""

    def __init__(self, conn: sqlite3.Connection):
        self.conn, self.rows = conn, 0

    async def fetchall(self, sql: str, args: tuple = ()) -> list:
        rows = self.conn.execute(sql, args).fetchall()
        self.rows += len(rows)
        return rows


def _home(n: int) -> tuple[_Counted, list[str]]:
    rnd = random.Random(7)
    ids = ["".join(rnd.choices(string.ascii_lowercase + string.digits, k=26)) for _ in range(n)]
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE sessions (id TEXT PRIMARY KEY, name TEXT, importing INTEGER NOT NULL DEFAULT 0)")
    conn.executemany("INSERT INTO sessions (id, name) VALUES (?, ?)", [(i, f"s{k}") for k, i in enumerate(ids)])
    conn.execute("INSERT INTO sessions (id, name) VALUES ('trip0000000000000000000000', 'trip plans')")
    return _Counted(conn), ids


def _said(q: _Counted, typed: str) -> str:
    return str(asyncio.run(no_session(q, typed)))


def test_the_session_meant_is_named_reading_a_bounded_number_of_rows():
    q, ids = _home(3000)
    meant = ids[1234]
    other = "0" if meant[0] != "0" else "1"
    for typed in (
        other + meant[1:],  # its first character changed
        meant[:-1] + ("0" if meant[-1] != "0" else "1"),  # its last
        meant[:13] + meant[14:],  # one left out
        meant[:5] + "z" + meant[5:],  # one added
        meant[:20],  # cut short
    ):
        q.rows = 0
        said = _said(q, typed)
        assert f"did you mean {meant}?" in said, (typed, said)
        assert q.rows <= 110, q.rows  # (a few by the id's index, never every session's)
    q.rows = 0
    assert "the session named 'trip plans' is trip0000000000000000000000" in _said(q, "trip plans")
    assert q.rows <= 5, q.rows
    said = _said(q, "nothing-like-any-id-here")
    assert "did you mean" not in said and "named" not in said, said


async def test_an_import_makes_no_guess(devices, monkeypatch):
    """The guess is for a refusal a person reads; an import's checks that its session is not here yet (a miss
    expected every time) made it twice, each a scan of every session's name and id and a difflib: on a follower
    importing 1,000 sessions (bench/load.py) each import cost more than the one before."""
    from sessiond.storage import unknown

    guessed: list[str] = []
    real = unknown._guess

    async def counted(q, sid: str) -> str:
        guessed.append(sid)
        return await real(q, sid)

    monkeypatch.setattr(unknown, "_guess", counted)
    sid, code = await devices.started_share("guessless", write=True)
    guessed.clear()
    assert (await devices.b.import_code(code, None))["session"] == sid
    assert guessed == []
    assert (await devices.dbb.get_session(sid))["name"] == "guessless"
