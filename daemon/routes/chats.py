"""Chats of a session: create, list, change, switch the current one."""

from aiohttp import web

from ...storage.errors import NOT_WRITABLE
from .. import validate as v
from .common import body, daemon_of, ok, session_id


async def create_chat(request: web.Request) -> web.Response:
    spec = v.new_chat(await body(request))
    return ok(await daemon_of(request).db.create_chat(session_id(request), spec), 201)


async def list_chats(request: web.Request) -> web.Response:
    return ok({"chats": await daemon_of(request).db.list_chats(session_id(request))})


async def patch_chat(request: web.Request) -> web.Response:
    changes = await body(request)
    db = daemon_of(request).db
    sid = session_id(request)
    chat = await db.resolve_chat(sid, request.match_info["chat"])
    return ok(await db.update_chat(sid, chat, lambda current: v.chat_patch(changes, current)))


async def switch_chat(request: web.Request) -> web.Response:
    ref = (await body(request))["chat"]
    db = daemon_of(request).db
    sid = session_id(request)
    chat = await db.resolve_chat(sid, ref)
    session = await db.get_session(sid)
    if session["current_chat"] == chat and session["access"] not in NOT_WRITABLE:
        return ok(session)  # already current: nothing to write, push or announce (as pausing a paused session)
    return ok(await db.update_session(sid, {"current_chat": chat}, event="chat.switched"))
