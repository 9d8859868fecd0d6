"""Search: full-text over every message on this device (storage/search.py)."""

from aiohttp import web

from .common import daemon_of, ok, query


async def search(request: web.Request) -> web.Response:
    q = query(request)
    db = daemon_of(request).db
    sid = q.get("session")
    hits = await db.search(q["q"], session=sid, user=q.get("user"), role=q.get("role"), limit=q.get("limit", 20))
    if sid is not None and not hits:
        await db.get_session(sid)  # a session this device does not have is a 404, not "no messages match"
    return ok({"query": q["q"], "hits": hits})
