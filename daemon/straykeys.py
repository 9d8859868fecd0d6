"""Key files left with no session, deleted at the daemon's start (daemon/server.py), before the socket serves."""

from __future__ import annotations

import logging

from ..storage.database import Database
from ..sync.engine import Syncer

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
