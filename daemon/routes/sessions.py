"""Sessions: create, list, read, change, delete; pause, resume, end."""

from aiohttp import web

from ...storage.tokens import counted_text
from .. import validate as v
from .common import body, daemon_of, ok, query, session_id, user_filter


def _counted(d, initial: list[dict]) -> None:
    """Initial messages given without a token count get the estimate every message does (in place)."""
    for m in initial:
        if m.get("tokens") is None:
            m["tokens"] = d.estimate(counted_text(m))


async def create_session(request: web.Request) -> web.Response:
    b = await body(request)
    v.refuse_past_expiry(b)
    spec = v.new_session(b)
    d = daemon_of(request)
    _counted(d, spec["initial_messages"])
    return ok(await d.db.create_session(spec), 201)


async def list_sessions(request: web.Request) -> web.Response:
    q = query(request)
    limit = q.get("limit", 50)
    user, no_user = user_filter(q)
    rows = await daemon_of(request).db.list_sessions(
        user=user,
        no_user=no_user,
        status=q.get("status"),
        tag=q.get("tag"),
        limit=limit + 1,
        after=q.get("after"),
    )
    nxt = rows[limit - 1]["id"] if len(rows) > limit else None
    return ok({"sessions": rows[:limit], "next": nxt})


async def get_session(request: web.Request) -> web.Response:
    d = daemon_of(request)
    sid = session_id(request)
    session = await d.db.get_session(sid, counts=True)
    session["sync"] = await d.ops.sync_status(sid)
    if (held := await d.db.held_here(sid)) is not None:  # a rekey left this device out: what no other device has
        session["held_here"] = held
    if (waits := d.ops.shared_idle.waiting(session)) is not None:  # idle, its end waiting for a pull (sharedidle.py)
        session["idle_end_waits"] = waits
    return ok(session)


async def patch_session(request: web.Request) -> web.Response:
    changes = await body(request)
    v.refuse_past_expiry(changes)
    d = daemon_of(request)
    sid = session_id(request)

    def fields(current: dict) -> dict:  # in the write transaction: merged into what is stored
        out = v.session_patch(changes, current)
        _counted(d, out.get("initial_messages", ()))
        return out

    return ok(await d.db.update_session(sid, fields))


async def delete_session(request: web.Request) -> web.Response:
    said = await daemon_of(request).ops.remove(session_id(request), force=bool(query(request).get("force")))
    return ok({"deleted": session_id(request), **said})


async def pause(request: web.Request) -> web.Response:
    return ok(await daemon_of(request).db.set_status(session_id(request), "paused"))


async def resume(request: web.Request) -> web.Response:
    return ok(await daemon_of(request).db.set_status(session_id(request), "active"))


async def end(request: web.Request) -> web.Response:
    return ok(await daemon_of(request).ops.end(session_id(request)))
