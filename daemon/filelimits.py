"""The limits a file's import is held to (config.toml's max_chats_per_session, max_messages_per_chat,
max_active_sessions(_per_user)), and their refusals in the file's terms: the sessions an append or a create
would name are the file's own, which the failed import deletes."""

from __future__ import annotations

from collections import Counter

from ..storage.errors import LimitReached


def within_limits(limits: dict, spec: dict, histories: list[list[dict]]) -> None:
    """A file's session (and its branches: `histories`) must fit the daemon's max_chats_per_session and
    max_messages_per_chat, checked before anything is written and refused naming what in the file is past
    which (an append's refusal names a session, which the failed import deleted, and a way on in it)."""
    sid = spec.get("id") or spec.get("name") or "conversation"
    chats = spec.get("chats") or [{"id": "main"}]
    cap = limits.get("max_chats_per_session")
    if cap and len(chats) > cap:
        raise LimitReached(
            f"the file's session {sid!r:.80} has {len(chats)} chats, more than this daemon's max_chats_per_session"
            f" ({cap}); nothing was imported",
            limit="max_chats_per_session",
            value=cap,
        )
    per_chat = limits.get("max_messages_per_chat")
    current = spec.get("current_chat") or chats[0]["id"]
    for msgs in histories if per_chat else ():
        for chat, n in Counter(m.get("chat") or current for m in msgs).items():
            if per_chat and n > per_chat:
                raise LimitReached(
                    f"the file's session {sid!r:.80} has {n} messages in chat {chat!r:.80}, more than this daemon's"
                    f" max_messages_per_chat ({per_chat}); nothing was imported",
                    limit="max_messages_per_chat",
                    value=per_chat,
                )


def past_active_limit(exc: LimitReached, plan: list[dict], active: list[dict], user: str | None) -> LimitReached:
    """The refusal of an import by an active-session limit, `exc`, restated when the file's own sessions
    made before it (`active`, hidden, and now deleted) are what filled the limit: the refusal said 'this
    daemon already has N active sessions', which a look at the sessions here does not show. `user`: that of
    the session refused."""
    limit, cap = exc.details.get("limit"), exc.details.get("value")
    per_user = limit == "max_active_sessions_per_user"
    if per_user:
        active = [s for s in active if s["user"] == user]
    if limit not in ("max_active_sessions", "max_active_sessions_per_user") or not active:
        return exc  # the home was full before the file came: that refusal is right as it is
    total = sum(
        (item.get("status", "active") == "active") + (0 if per_user else len(item["forks"]))  # (a branch: no user)
        for item in plan
        if not per_user or item["spec"].get("user") == user
    )
    of = f" of user {user!r:.80}" if per_user else ""
    return LimitReached(
        f"the file holds {total} sessions{of} to import as active (its conversations and their branches), and this"
        f" daemon has room for {len(active)} more ({limit} is {cap}); nothing was imported. Pause, end or delete"
        f" sessions here first, or import the file in parts",
        limit=limit,
        value=cap,
    )
