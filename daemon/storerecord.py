"""A home an older sessiond used before homes remembered their store (<home>/store-url, from 2026-12-02 on):
whether a start that names no store must be refused rather than take the home's default store. The
daemon's start asks before it opens the database (daemon/server.py); `doctor` asks of a stopped home."""

from __future__ import annotations

import os
import sqlite3

from ..storage.fsutil import sqlite_ro_uri
from ..stores.config import folder_of
from ..stores.filelayout import is_store
from .home import Home, HomeError


def _pushed_to_the_home_store(db_path: str) -> bool:
    """Whether the database at `db_path` (read only, at whatever schema version an older sessiond left it)
    records pushes of sessions that sync with the home's store (not a store of their own, an imported
    session's from its code): sessions that are in some store the home was started with."""
    if not os.path.exists(db_path):
        return False
    conn = sqlite3.connect(sqlite_ro_uri(db_path), uri=True)
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "sync_state" not in tables:
            return False
        pushed = "(s.head_rev > 0 OR s.pushed_seq > 0)"
        if "remotes" not in tables:
            return conn.execute(f"SELECT 1 FROM sync_state s WHERE {pushed} LIMIT 1").fetchone() is not None
        return (
            conn.execute(
                f"SELECT 1 FROM sync_state s LEFT JOIN remotes r USING (session_id)"
                f" WHERE {pushed} AND r.store_url IS NULL LIMIT 1"
            ).fetchone()
            is not None
        )
    finally:
        conn.close()


def store_not_recorded(home: Home, wanted: str | None) -> str | None:
    """Why a start of `home` asking for the store `wanted` (--store or config.toml's; None: neither) must be
    refused, or None (the way out is the caller's to say: a --store naming the old store). A home an older
    sessiond used (before 2026-12-02, when homes began to remember their store) has no store-url: its store
    was named at each start. Started with none, such a home whose sessions were pushed, and not to its
    default store (no store there), is refused: taking the default store would push every session there in
    full while the devices they are shared with stay on the store they know, each side no longer seeing the
    other's writes. Damage the database has is left to its open to report."""
    if wanted is not None or home.remembered_store() is not None:
        return None
    default = folder_of(home.default_store)
    if default is not None and is_store(default):
        return None  # the store it pushed to was the default one
    try:
        pushed = _pushed_to_the_home_store(home.db)
    except sqlite3.Error:
        return None
    if not pushed:
        return None
    return (
        f"the sessions of {home.path} were pushed to a store that the sessiond which pushed them did not record "
        f"(a version before 2026-12-02 named it at each start), and none is given now"
    )


def check_store_known(home: Home, wanted: str | None) -> None:
    """The daemon's start, before the database is opened (so not even migrated): refused if
    store_not_recorded says so."""
    why = store_not_recorded(home, wanted)
    if why is not None:
        raise HomeError(
            f"{why}: start once with --store URL, the store it was started with (its --store, or `store` in its "
            f"config.toml); the home remembers it from then on. Nothing was changed"
        )
