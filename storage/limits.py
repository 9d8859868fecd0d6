"""The limits on active sessions (max_active_sessions, max_active_sessions_per_user): one check, for every
way a session becomes active here: create, resume, a change of user, and an import from a share code; and
a fork's copied history against max_messages_per_chat."""

from __future__ import annotations

import shlex
from typing import Any

from .errors import LimitReached, free_active_ways, new_session_ways, session_path

# The sessions a limit counts: every one but those an import from a share code is still writing (it checks
# them when it ends); those an import from a file is writing count already, hidden as they are, so that
# the file's sessions are refused as one by one they would be (storage/sessions.py, create).
COUNTED = "(NOT importing OR id IN (SELECT session_id FROM file_imports))"


async def check_active_limits(
    tx: Any, limits: dict[str, int], user: str | None, *, daemon: bool = True, besides: str | None = None
) -> None:
    """One more active session of `user` must fit max_active_sessions_per_user and (`daemon`: one more of
    the daemon's) max_active_sessions. `besides`: a session not to count (the one being imported, already in
    the table). `tx` reads inside the caller's write transaction, so that two at once cannot both pass."""

    async def active(where: str = "", args: tuple = ()) -> int:
        if besides is not None:
            where, args = where + " AND id<>?", (*args, besides)
        return (await tx.fetchone(f"SELECT count(*) FROM sessions WHERE status='active' AND {COUNTED}{where}", args))[0]

    cap = limits.get("max_active_sessions")
    if daemon and cap and await active() >= cap:
        raise LimitReached(
            f"this daemon already has {cap} active sessions (max_active_sessions); "
            + _free_one("", "max_active_sessions"),
            limit="max_active_sessions",
            value=cap,
            api=free_active_ways(None),
        )
    cap = limits.get("max_active_sessions_per_user")
    if cap and user is not None and await active(" AND user=?", (user,)) >= cap:
        raise LimitReached(
            f"user {user!r} already has {cap} active sessions (max_active_sessions_per_user); "
            + _free_one(f" --user {shlex.quote(user)}", "max_active_sessions_per_user"),
            limit="max_active_sessions_per_user",
            value=cap,
            api=free_active_ways(user),
        )


def _free_one(whose: str, setting: str) -> str:
    """The ways on from an active-session limit: the sessions it counts (`whose`: the `ls` filter), the commands
    that make one not active, and the setting."""
    return (
        f"pause, end or delete one first (`sessiond ls{whose} --status active` lists them; `sessiond pause ID`,"
        f" `sessiond end ID`, `sessiond rm ID`), or raise {setting} in the daemon's config.toml"
    )


async def check_imported(tx: Any, limits: dict[str, int], sid: str) -> None:
    """An imported session that is active must fit the limits as a new one would (checked as its import
    ends, in that transaction: the import is undone whole if it does not)."""
    row = await tx.fetchone("SELECT status, user FROM sessions WHERE id=?", (sid,))
    if row is not None and row[0] == "active":
        await check_active_limits(tx, limits, row[1], besides=sid)


def check_copy_chats(limits: dict[str, int], what: str, n: int) -> None:
    """A copy made with its `n` chats (`what`: "a clone of session X", "a fork of session X at message M")
    must fit max_chats_per_session: refused before it is made, naming its source (not the id the copy
    would have had, which the user never saw) and the way out."""
    cap = limits.get("max_chats_per_session")
    if cap and n > cap:
        raise LimitReached(
            f"{what} would have {n} chats, more than this daemon's max_chats_per_session ({cap}): go on in a"
            " new session (`sessiond new`), or raise max_chats_per_session in the daemon's config.toml",
            limit="max_chats_per_session",
            value=cap,
            api=["POST /v1/sessions"],
        )


def check_fork(limits: dict[str, int], sid: str, at: str, chats: list[str]) -> None:
    """A fork of `sid` at message `at`, whose copied history has these messages' chats (one entry per
    message), must fit max_messages_per_chat (lowered since the chat grew): refused before the fork is made,
    naming the source and the fork point, not the fork the append would have named (deleted then)."""
    cap = limits.get("max_messages_per_chat")
    if not cap:
        return
    for chat in dict.fromkeys(chats):
        if (n := chats.count(chat)) > cap:
            raise LimitReached(
                f"a fork of session {sid!r} at message {at!r} would hold {n} messages in chat {chat!r}, more than"
                f" this daemon's max_messages_per_chat ({cap}): fork at an earlier message, or go on in a clone"
                f" (`sessiond clone {sid}`: same settings, no history)",
                limit="max_messages_per_chat",
                value=cap,
                api=[f'POST {session_path(sid, "fork")} {{"at": MESSAGE_ID}}', *new_session_ways(sid, fork=False)],
            )
