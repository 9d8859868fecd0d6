"""The refusal of a session id this device has not: `not_found`, naming the session most likely meant, when
one is. A user types a session's name where its id goes (`sessiond log "trip plans"`: `ls` shows both side by
side), mistypes a character of the id, or copies the start of it; "see `sessiond ls`" alone left them to find
it. Read only on that refusal's path, never on an answer's, and bounded there: the refusal of an append is made
inside its write transaction, which every other write waits for, so the guess reads a few rows by the id's index
and two scans SQLite makes in C, never every id into Python (difflib over 10,000 ids took ~120 ms)."""

from __future__ import annotations

import difflib
from typing import Any

from .errors import NotFound
from .ids import LONGEST_ID, NOT_QUOTED, share_code_given

_NAMED_SHOWN = 3  # at most this many sessions of one name are listed
_CANDIDATES = 50  # ids read for a one-edit guess, from each half of the id typed
_TOP = "\U0010ffff"  # sorts after every text that starts the same (SQLite compares ids as UTF-8 bytes)


async def no_session(q: Any, sid: str) -> NotFound:
    """NotFound for `sid`, read through `q` (the committed state, or the transaction you hold); raise it."""
    if len(sid) > LONGEST_ID:  # (no id: quoted nowhere, as it may be a secret given where an id goes)
        if share_code_given(sid):  # (a code given before it was imported)
            return NotFound(
                f"a share code was given where a session's id goes ({NOT_QUOTED}); import it first, `sessiond"
                " import` with the code on standard input, then use the id it prints (`sessiond ls`)"
            )
        return NotFound(
            f"no session has that id: it is {len(sid)} characters, an id is {LONGEST_ID} at most (see `sessiond ls`)"
        )
    message = f"no session {sid!r} on this device (see `sessiond ls`)"
    guess = await _guess(q, sid)
    return NotFound(message + guess if guess else message)


async def _guess(q: Any, sid: str) -> str:
    [(count,)] = await q.fetchall("SELECT count(*) FROM sessions WHERE importing=0 AND name=?", (sid,))
    if count:
        named = [r[0] for r in await _ids(q, "name=? ORDER BY id", (sid,), _NAMED_SHOWN)]
        if count == 1:
            return f"; the session named {sid!r} is {named[0]}"
        shown = ", ".join(named) + (", ..." if count > _NAMED_SHOWN else "")
        return f"; {count} sessions are named {sid!r}: {shown} (give one's id)"
    if len(sid) >= 6:  # the start of an id, copied short
        started = [r[0] for r in await _ids(q, "id > ? AND id < ?", (sid, sid + _TOP), 2)]
        if len(started) == 1:
            return f"; did you mean {started[0]}?"
        if started:
            return ""
    # one character mistyped, left out or added: the id's first half or its last is as typed
    half = max(1, (len(sid) - 1) // 2)
    candidates = [r[0] for r in await _ids(q, "id >= ? AND id < ?", (sid[:half], sid[:half] + _TOP), _CANDIDATES)]
    candidates += [r[0] for r in await _ids(q, "substr(id, -?) = ?", (half, sid[-half:]), _CANDIDATES)]
    close = difflib.get_close_matches(sid, candidates, n=1, cutoff=0.9)
    return f"; did you mean {close[0]}?" if close else ""


async def _ids(q: Any, where: str, args: tuple, limit: int) -> list:
    return await q.fetchall(f"SELECT id FROM sessions WHERE importing=0 AND {where} LIMIT ?", (*args, limit))
