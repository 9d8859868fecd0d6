"""Search: full-text over every message on this device (storage/search.py)."""

from aiohttp import web

from .common import daemon_of, ok, query, user_filter


async def search(request: web.Request) -> web.Response:
    q = query(request)
    db = daemon_of(request).db
    sid = q.get("session")
    user, no_user = user_filter(q)
    hits = await db.search(
        q["q"], session=sid, user=user, no_user=no_user, role=q.get("role"), limit=q.get("limit", 20)
    )
    if sid is not None and not hits:
        await db.get_session(sid)  # a session this device does not have is a 404, not "no messages match"
    return ok({"query": q["q"], "hits": hits})
