"""Messages: appending (one, or a batch in one transaction; safe to retry with an Idempotency-Key) and
listing. The hot path: a batch is checked by one TypeAdapter call (daemon/validate.py)."""

from aiohttp import web

from ...api.idempotency import IDEMPOTENCY_HEADER
from ...api.messages import Append, MessageIn
from ...storage.errors import IdempotencyKeyReused, Invalid, NotFound
from ...storage.tokens import counted_text
from .. import validate as v
from .common import body_as, checked_as, daemon_of, ok, query, session_id


async def append_messages(request: web.Request) -> web.Response:
    # a MessageIn, or a MessageBatch when it has `messages`
    b = await body_as(request, MessageIn, BATCH_KEY, NESTED)
    key = v.idempotency_key(request.headers.get(IDEMPOTENCY_HEADER))
    return ok(await append(daemon_of(request), session_id(request), b, key), 201)


BATCH_KEY = b'"messages"'  # in a body that is a batch
NESTED = ("metadata", "tool_calls", "call_fields")  # a message's fields that hold objects
# echoed in a single message's answer, as read back
TOOL_KEYS = ("name", "tool_call_id", "tool_calls", "call_fields")


def append_body(raw: bytes) -> dict:
    """An append's body (as sent: bytes) checked as the POST checks it (the append stream's)."""
    return checked_as(raw, MessageIn, BATCH_KEY, NESTED, Append)


async def append(d, sid: str, b: dict, key: str | None) -> dict:
    """Append `b` (a checked body: one message, or a batch) to session `sid`: the answer, once committed.
    The POST and the append stream (routes/appends.py) both append through this.

    Nothing here or in Database.append_messages awaits before the append's transaction asks for the
    writer's lock (first come, first served): the append stream relies on it for the order of a
    connection's appends to a session, the second transaction of a chat named by name aside (it waits
    for that one); its tests would see an await added before it."""
    est = d.estimate
    if "messages" in b:
        checked = v.given(b["messages"])
        for m in checked:
            if m.get("tokens") is None:
                m["tokens"] = est(counted_text(m))
        stored = await _append(d.db, sid, checked, b.get("chat"), key)
        # A batch answers with ids, not an echo of every message: the app has the content already.
        out = {
            "count": len(stored),
            "ids": [m["id"] for m in stored],
            "chat": stored[0]["chat"],
            "created_at": stored[0]["created_at"],
            "first_seq": stored[0]["seq"],
            "last_seq": stored[-1]["seq"],
        }
        chats = [m["chat"] for m in stored]
        if any(c != chats[0] for c in chats):  # messages naming several chats: the chat of each id
            out["chats"] = chats
        return out
    m = v.given([b], None)[0]
    if m.get("tokens") is None:
        m["tokens"] = est(counted_text(m))
    stored = await _append(d.db, sid, [m], m.get("chat"), key)
    return {**stored[0], "content": m["content"], **{k: m[k] for k in TOOL_KEYS if k in m}}


async def _append(db, sid: str, messages: list[dict], chat: str | None, key: str | None) -> list[dict]:
    """Append, with chats named by id or by name (as every other route takes them). The append itself
    looks chats up by id, so the common case costs nothing more: names are resolved only when it
    refuses, and the append is made again with their ids (a retry by name then digests as its first
    try did, whose record holds the ids)."""
    try:
        return await db.append_messages(sid, messages, chat, key=key, check_results=True)
    except (NotFound, IdempotencyKeyReused):
        await db.get_session(sid)  # no such session: said so, not that it has no such chat
        refs = {r for r in (chat, *(m.get("chat") for m in messages)) if r is not None}
        ids = {r: await db.resolve_chat(sid, r) for r in refs}  # an unknown chat or session: refused here
        if all(ids[r] == r for r in refs):
            raise  # every chat was named by its id: the refusal stands
    for m in messages:
        if m.get("chat") is not None:
            m["chat"] = ids[m["chat"]]
    return await db.append_messages(sid, messages, ids.get(chat) if chat else None, key=key, check_results=True)


async def list_messages(request: web.Request) -> web.Response:
    q = query(request)
    limit = q.get("limit", 100)
    db = daemon_of(request).db
    sid = session_id(request)
    chat = q.get("chat")
    if chat is not None and q.get("all"):
        raise Invalid(
            "query parameters chat and all=true ask for one chat's messages and every chat's: give chat, or all=true"
        )
    if chat is not None:
        chat = await db.resolve_chat(sid, chat)
    before, after, last = q.get("before"), q.get("after"), q.get("last", False)
    rows = await db.list_messages(
        sid, chat=chat, limit=limit + 1, before=before, after=after, all_chats=q.get("all", False), last=last
    )
    if last or (before and not after):  # read from the end: `next` is the cursor of the page before
        more = len(rows) > limit
        rows = rows[-limit:]
        return ok({"messages": rows, "next": rows[0]["id"] if more and rows else None})
    nxt = rows[limit - 1]["id"] if len(rows) > limit else None
    return ok({"messages": rows[:limit], "next": nxt})
