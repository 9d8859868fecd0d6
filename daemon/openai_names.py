"""Which session and chat a request to the OpenAI-compatible endpoint (openai_compat.py) names: its
X-Sessiond-Session and X-Sessiond-Chat headers, read and checked, and the answer's headers that name them
back. A chat is named by its id or else its name, as the CLI picks chats (storage/chats.py's resolve); a
request naming none goes to the session's current chat, and no request switches it."""

from __future__ import annotations

from aiohttp import web

from ..storage.errors import Invalid, NotFound
from ..storage.ids import LONGEST_ID, NOT_QUOTED, share_code_given

SESSION_HEADER = "X-Sessiond-Session"
CHAT_HEADER = "X-Sessiond-Chat"


def named(sid: str | None, chat: str | None = None) -> dict:
    """The response's headers that name the request's session and chat, those known. A header's value longer than an
    id can be is named back to no one (a refusal's: no session has it; it may be a share code pasted there)."""
    sid = sid if sid is None or len(sid) <= LONGEST_ID else None
    return {k: x for k, x in ((SESSION_HEADER, sid), (CHAT_HEADER, chat)) if x}


def session_named(request: web.Request) -> str | None:
    """The session the X-Sessiond-Session header names; None without the header. An empty one names no
    session and is refused: read as absent, it made a new session, apart from the one the app meant."""
    sid = request.headers.get(SESSION_HEADER)
    if sid == "":
        raise Invalid(
            f"{SESSION_HEADER} is empty: give a session id, or leave the header out for a new session",
            param=SESSION_HEADER,
        )
    return sid


def chat_named(request: web.Request, sid: str | None) -> str | None:
    """The chat (an id or a name) the X-Sessiond-Chat header names; None without the header: the session's
    current chat. An empty one names no chat, and one without X-Sessiond-Session names a chat of no session
    (a call without it makes a new session, whose only chat is its first): both refused, nothing made."""
    ref = request.headers.get(CHAT_HEADER)
    if ref == "":
        raise Invalid(
            f"{CHAT_HEADER} is empty: give a chat's id or name (`sessiond chat ls SESSION`), or leave the header"
            " out for the session's current chat",
            param=CHAT_HEADER,
        )
    if ref is not None and sid is None:
        raise Invalid(
            f"{CHAT_HEADER} names a chat of the session {SESSION_HEADER} names, and that header is missing: give"
            f" it too (a call without it makes a new session, which has only its first chat: leave out"
            f" {CHAT_HEADER} for that)",
            param=CHAT_HEADER,
        )
    return ref


async def session_of(d, sid: str) -> dict:
    """The session X-Sessiond-Session names, read; one not on this device is refused naming the header, and the
    way on for an SDK app (a new session: the header left out), as an unknown chat is (chat_of)."""
    try:
        return await d.db.get_session(sid)
    except NotFound:
        raise NotFound(not_here(sid), param=SESSION_HEADER) from None


def not_here(sid: str) -> str:
    """session_of's refusal, quoting nothing longer than an id can be: a share code pasted into the header (an app's
    setting for the session it uses) was quoted whole, to the app that shows or logs it, and whoever sees a code
    reads its session."""
    way_on = (
        "give the id of one of its sessions (`sessiond ls`, GET /v1/sessions), or leave the header out for a new"
        " session"
    )
    if share_code_given(sid):
        return (
            f"a share code was given in the {SESSION_HEADER} header ({NOT_QUOTED}): `sessiond import` it on this"
            f" device, then give the id it prints there, or leave the header out for a new session"
        )
    return f"no session {given(sid, SESSION_HEADER)} on this device, which the {SESSION_HEADER} header names: {way_on}"


def given(value: str, header: str) -> str:
    """A header's value as a refusal names it: quoted when it may be an id (or a chat's name), else by its length
    only (an app may put anything in a header: a share code, a key pasted into the wrong setting)."""
    if len(value) > LONGEST_ID:
        kind = "a share code, " if share_code_given(value) else ""
        return f"({kind}the {header} header's {len(value)} characters, {NOT_SHOWN} {LONGEST_ID} at most)"
    return repr(value)


NOT_SHOWN = "not quoted: longer than an id, which is"


async def chat_of(d, sid: str, session: dict, ref: str | None) -> dict:
    """The chat a request to session `sid` (read, so it exists) goes to: the one X-Sessiond-Chat names, by
    its id or else its name as the CLI picks chats, or the session's current chat. Never a switch."""
    if ref is None:
        return await d.db.get_chat(sid, session["current_chat"])
    try:
        cid = await d.db.resolve_chat(sid, ref)
    except NotFound:
        raise NotFound(
            f"session {sid!r} has no chat {given(ref, CHAT_HEADER)}, which the {CHAT_HEADER} header names: give one"
            f" of its chats' ids or names (`sessiond chat ls {sid}`), or leave the header out for its current chat",
            param=CHAT_HEADER,
        ) from None
    return await d.db.get_chat(sid, cid)
