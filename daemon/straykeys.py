"""Key files left with no session, deleted at the daemon's start (daemon/server.py), before the socket serves."""

from __future__ import annotations

import logging
import os

from ..api.locate import HomeError
from ..storage.database import Database
from ..storage.heldfiles import cut_copies, cut_copy_said
from ..sync.engine import Syncer
from ..sync.keys import sessions_with_files
from .home import Home

log = logging.getLogger("sessiond")


async def delete_stray_keys(db: Database, syncer: Syncer, started: float) -> None:
    """Key files of sessions that do not exist here: `rm` deletes a session's rows, then its key files,
    and a crash between the two (or an import from a share code cut short after it wrote the code's
    keys, whose rows the database's opening deleted) left a key on disk for ever, keeping the store's
    copy readable here after `rm`. Each is looked at under the session's lock, which an import holds
    from the writing of its keys to that of its rows and a push while it makes a key: a session with
    no row then has no import or push under way that needs them. Temporary files of a key's write cut
    short (before `started`, the daemon's start) go too. Done at start, before the socket serves."""
    keys = syncer.keys
    for name in keys.remove_leftover_temp_files(started):
        log.warning("a write into the key folder was cut short (the daemon stopped part-way): %s deleted", name)
    stray = keys.sessions_with_files() - set(await db.session_ids(hidden=True))
    for sid in sorted(stray):
        async with syncer.ctx.lock(sid):
            if sid in await db.session_ids(hidden=True):
                continue  # (made meanwhile)
            log.warning(
                "the key files of a session that is not here were left by a delete or an import cut short "
                "(the daemon stopped part-way): deleted",
                extra={"session": sid},
            )
            keys.delete_session_key(sid)


def refuse_lost_database(home: Home) -> None:
    """Refuse a start whose home has no sessions.db while its key folder holds sessions' keys: the database was
    deleted or moved (by hand, or under a running daemon), not a fresh home. Started so, the daemon would make
    an empty database and then delete those keys as stray (delete_stray_keys), leaving the store's copies of
    the sessions unreadable here for good. Nothing is made or changed before this refusal."""
    if os.path.exists(home.db):
        return
    held = sessions_with_files(os.path.join(home.keys, "sessions"))
    if not held:
        return
    n = len(held)
    copies = "".join("{}. What to do: {}. ".format(*cut_copy_said(c, home.db)) for c in cut_copies(home.db))
    raise HomeError(
        f"{home.db} is missing, but {os.path.join(home.keys, 'sessions')} holds the keys of {n} session"
        f"{'s' if n != 1 else ''} that it held (e.g. {min(held)}): the database was deleted or moved. Put it back"
        f" (sessions.db, with the sessions.db-wal beside it if there is one) and start again; nothing was changed."
        f" {copies}To start this home afresh without those sessions instead, move {home.keys} away first"
    )
