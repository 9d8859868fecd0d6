"""Managing a session: quota, context and compaction, clones and forks, checkpoints and proofs;
statistics and clean-up across sessions."""

from aiohttp import web

from .common import body, daemon_of, ok, query, session_id, user_filter


async def quota(request: web.Request) -> web.Response:
    return ok(await daemon_of(request).db.quota(session_id(request)))


async def _chat(db, sid: str, ref: str | None) -> str | None:
    return await db.resolve_chat(sid, ref) if ref is not None else None  # "" names no chat: refused by the models


async def context(request: web.Request) -> web.Response:
    db = daemon_of(request).db
    sid = session_id(request)
    return ok(await db.context(sid, await _chat(db, sid, query(request).get("chat"))))


async def compact(request: web.Request) -> web.Response:
    b = await body(request)
    db = daemon_of(request).db
    sid = session_id(request)
    return ok(await db.compact(sid, await _chat(db, sid, b.get("chat")), target_tokens=b.get("target_tokens")))


async def uncompact(request: web.Request) -> web.Response:
    b = await body(request)
    db = daemon_of(request).db
    sid = session_id(request)
    return ok(await db.compact(sid, await _chat(db, sid, b.get("chat")), undo=True))


async def clone(request: web.Request) -> web.Response:
    b = await body(request)
    return ok(await daemon_of(request).db.clone(session_id(request), new_id=b.get("id"), name=b.get("name")), 201)


async def fork(request: web.Request) -> web.Response:
    b = await body(request)
    return ok(
        await daemon_of(request).db.fork(session_id(request), b["at"], new_id=b.get("id"), name=b.get("name")), 201
    )


async def make_checkpoint(request: web.Request) -> web.Response:
    return ok(await daemon_of(request).ops.checkpoint(session_id(request)), 201)


async def list_checkpoints(request: web.Request) -> web.Response:
    return ok({"checkpoints": await daemon_of(request).db.checkpoints(session_id(request))})


async def verify_proof(request: web.Request) -> web.Response:
    b = await body(request)
    return ok(await daemon_of(request).ops.verify_proof(session_id(request), b["proof"]))


async def stats(request: web.Request) -> web.Response:
    q = query(request)
    user, no_user = user_filter(q)
    d = daemon_of(request)
    answer = await d.db.stats(q.get("session"), user, no_user)
    if "session" in q and (waits := d.ops.shared_idle.waiting(await d.db.get_session(q["session"]))) is not None:
        answer["idle_end_waits"] = waits  # idle, its end waiting for a pull (sharedidle.py), as `show` says
    return ok(answer)


async def cleanup(request: web.Request) -> web.Response:
    b = await body(request)
    return ok(await daemon_of(request).ops.cleanup(b["older_than"], dry_run=b.get("dry_run", False)))
