"""The refusal of a session id this device has not: `not_found`, naming the session most likely meant, when
one is. A user types a session's name where its id goes (`sessiond log "trip plans"`: `ls` shows both side by
side), mistypes a character of the id, or copies the start of it; "see `sessiond ls`" alone left them to find
it. Read only on that refusal's path (a listing of ids and names), never on an answer's."""

from __future__ import annotations

import difflib
from typing import Any

from .errors import NotFound

_NAMED_SHOWN = 3  # at most this many sessions of one name are listed


async def no_session(q: Any, sid: str) -> NotFound:
    """NotFound for `sid`, read through `q` (the committed state, or the transaction you hold); raise it."""
    message = f"no session {sid!r} on this device (see `sessiond ls`)"
    guess = _guess(sid, await q.fetchall("SELECT id, name FROM sessions WHERE importing=0"))
    return NotFound(message + guess if guess else message)


def _guess(sid: str, rows: list) -> str:
    named = [r[0] for r in rows if r[1] == sid]
    if len(named) == 1:
        return f"; the session named {sid!r} is {named[0]}"
    if named:
        shown = ", ".join(named[:_NAMED_SHOWN]) + (", ..." if len(named) > _NAMED_SHOWN else "")
        return f"; {len(named)} sessions are named {sid!r}: {shown} (give one's id)"
    ids = [r[0] for r in rows]
    started = [i for i in ids if len(sid) >= 6 and i.startswith(sid)]
    if len(started) == 1:
        return f"; did you mean {started[0]}?"
    close = [] if started else difflib.get_close_matches(sid, ids, n=1, cutoff=0.9)
    return f"; did you mean {close[0]}?" if close else ""
