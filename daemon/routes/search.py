"""Search: full-text over every message on this device (storage/search.py)."""

from aiohttp import web

from .common import daemon_of, ok, query


async def search(request: web.Request) -> web.Response:
    q = query(request)
    hits = await daemon_of(request).db.search(
        q["q"], session=q.get("session"), user=q.get("user"), role=q.get("role"), limit=q.get("limit", 20)
    )
    return ok({"query": q["q"], "hits": hits})
