"""A chat's size against max_messages_per_chat: its messages counted, and what would add more past the cap
refused before it is done (an append, a question to a model, which needs room for its answer too), naming the
ways on that can work (storage/messages.py)."""

from __future__ import annotations

from .errors import LimitReached, new_chat_way, new_session_ways


async def messages_in_chat(q, sid: str, chat: str) -> int:
    """The messages of a chat, read through `q` (the committed state, or the transaction held)."""
    return (await q.fetchall("SELECT count(*) FROM messages WHERE session_id=? AND chat_id=?", (sid, chat)))[0][0]


async def room_for_chat(q, limits: dict, sid: str) -> bool:
    """Whether max_chats_per_session leaves the session room for another chat (read through `q`): a refusal
    names a new chat as a way on only then."""
    cap = limits.get("max_chats_per_session")
    return not cap or (await q.fetchall("SELECT count(*) FROM chats WHERE session_id=?", (sid,)))[0][0] < cap


async def check_chat_room(q, limits: dict, sid: str, chat: str, adding: int, cap: int, what: str = "") -> None:
    """Refuse `adding` messages to a chat past max_messages_per_chat (`cap`), naming the ways on that can work:
    another chat only while max_chats_per_session leaves room for one, a clone, the setting."""
    have = await messages_in_chat(q, sid, chat)
    if have + adding <= cap:
        return
    if adding > cap:  # more than any chat may hold: no other chat, nor a clone's, takes them either
        raise LimitReached(
            f"these {adding} messages{what} are more than max_messages_per_chat ({cap}) lets any chat of session "
            f"{sid!r} hold (chat {chat!r} holds {have}): send at most {cap} to a chat, or raise "
            "max_messages_per_chat in the daemon's config.toml",
            limit="max_messages_per_chat",
            value=cap,
        )
    room = await room_for_chat(q, limits, sid)
    another = f"go on in another chat (`sessiond chat new {sid} --switch`), " if room else ""
    raise LimitReached(
        f"chat {chat!r} of session {sid!r} holds {have} messages; {adding} more{what} would pass "
        f"max_messages_per_chat ({cap}): {another}go on in a new session (`sessiond clone {sid}`: the same settings, "
        "no history), or raise max_messages_per_chat in the daemon's config.toml",
        limit="max_messages_per_chat",
        value=cap,
        api=([new_chat_way(sid)] if room else []) + new_session_ways(sid, fork=False),
    )
