"""The socket API: a versioned JSON API under /v1. Each route is declared once, in ROUTES, which drives
both the aiohttp router and the OpenAPI document at GET /v1/openapi.json."""
from __future__ import annotations

import asyncio
import json
import logging
import re
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from aiohttp import web

from ..storage.errors import Invalid, NotFound, SessiondError

from . import complete, openai_compat, validate as v
from .openapi import build_openapi

log = logging.getLogger("sessiond.api")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Route:
    method: str
    path: str
    handler: Handler
    summary: str
    request: str | None = None  # schema name in openapi.SCHEMAS
    response: str | None = None
    status: int = 200
    query: tuple[str, ...] = ()
    headers: tuple[str, ...] = ()  # request headers it reads, in openapi.HEADERS
    errors: tuple[int, ...] = ()  # error statuses beyond the common ones
    stream: bool = False  # may answer with text/event-stream too


def ok(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda d: json.dumps(d, ensure_ascii=False))


# A JSON escape of a UTF-16 surrogate: in a pair it is one character, alone it is not text at all.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _bad_json(message: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(text=json.dumps({"error": {"code": "bad_json", "message": message}}),
                              content_type="application/json")


async def body_json(request: web.Request) -> Any:
    if request.content_length == 0 or not request.can_read_body:
        return {}
    raw = await request.read()
    if not raw:  # no body at all; whitespace alone is not JSON and gets the error below
        return {}
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        raise _bad_json(f"request body is not valid JSON: {exc}") from None
    except RecursionError:
        raise _bad_json("request body is nested too deeply to be read (sessions hold at most 32 levels)") from None
    if _SURROGATE_ESCAPE.search(raw):  # rare: only then is every string looked at
        v.find_lone_surrogate(data)
    return data


def daemon_of(request: web.Request):
    return request.app["daemon"]


# ---------------------------------------------------------------------------------------------- handlers
async def status(request: web.Request) -> web.Response:
    return ok(await daemon_of(request).status())


async def openapi(request: web.Request) -> web.Response:
    return ok(request.app["openapi"])


async def create_session(request: web.Request) -> web.Response:
    spec = v.session_spec(v.obj(await body_json(request)))
    d = daemon_of(request)
    for m in spec["initial_messages"]:
        if m.get("tokens") is None:
            m["tokens"] = d.estimate(m["content"])
    session = await d.db.create_session(spec)
    return ok(session, 201)


async def list_sessions(request: web.Request) -> web.Response:
    q = request.query
    limit = v.query_int(q, "limit", 50, 1, 1000)
    st = q.get("status")
    if st is not None and st not in ("active", "paused", "ended"):
        raise Invalid("status must be active, paused or ended")
    rows = await daemon_of(request).db.list_sessions(user=q.get("user"), status=st, tag=q.get("tag"),
                                                     limit=limit + 1, after=q.get("after"))
    nxt = rows[limit - 1]["id"] if len(rows) > limit else None
    return ok({"sessions": rows[:limit], "next": nxt})


async def get_session(request: web.Request) -> web.Response:
    d = daemon_of(request)
    sid = request.match_info["id"]
    session = await d.db.get_session(sid, counts=True)
    session["sync"] = (await d.sync_status(sid))
    return ok(session)


async def patch_session(request: web.Request) -> web.Response:
    body = v.obj(await body_json(request))
    if "status" in body:
        raise Invalid("status changes through POST /v1/sessions/{id}/pause, /resume or /end")
    v.only(body, ("name", "user", "system_prompt", "model", "settings", "metadata", "tags", "preferences",
                  "expires_at", "expires_in", "initial_messages", "policy") + v.POLICY_SHORTCUTS)
    if not body:
        raise Invalid("nothing to change: give at least one field")
    fields: dict[str, Any] = {}
    for key, max_len in (("name", v.MAX_SHORT), ("user", 200), ("system_prompt", v.MAX_TEXT), ("model", 200)):
        if key in body:
            fields[key] = v.opt_str(body, key, max_len)
    for key in ("metadata", "preferences"):
        if key in body:
            fields[key] = v.opt_obj(body, key) or {}
    if "tags" in body:
        fields["tags"] = v.tags(body["tags"])
    if "initial_messages" in body:
        fields["initial_messages"] = v.initial_messages(body["initial_messages"])
    if "expires_at" in body or "expires_in" in body:
        fields["expires_at"] = v.expiry(body)
    db = daemon_of(request).db
    current = await db.get_session(request.match_info["id"])
    if "settings" in body:  # merged per field, like policy fields; null clears them all
        fields["settings"] = v.settings(body["settings"], base=current["settings"]) \
            if body["settings"] is not None else {}
    pol = v.policy(body, current["policy"])
    if pol is not None:
        fields["policy"] = pol
    return ok(await db.update_session(request.match_info["id"], fields))


async def delete_session(request: web.Request) -> web.Response:
    await daemon_of(request).delete_session(request.match_info["id"])
    return ok({"deleted": request.match_info["id"]})


async def pause(request: web.Request) -> web.Response:
    return ok(await daemon_of(request).db.set_status(request.match_info["id"], "paused"))


async def resume(request: web.Request) -> web.Response:
    return ok(await daemon_of(request).db.set_status(request.match_info["id"], "active"))


async def end(request: web.Request) -> web.Response:
    return ok(await daemon_of(request).end(request.match_info["id"]))


async def create_chat(request: web.Request) -> web.Response:
    body = v.obj(await body_json(request))
    v.only(body, ("id", "name", "system_prompt", "model", "settings", "switch", "policy", "max_context_tokens",
                  "context_margin", "auto_compact"))
    if body.get("switch") is not None and not isinstance(body["switch"], bool):
        raise Invalid("switch must be true or false")
    spec = {"id": v.opt_str(body, "id", 128), "name": v.opt_str(body, "name"),
            "system_prompt": v.opt_str(body, "system_prompt", v.MAX_TEXT), "model": v.opt_str(body, "model", 200),
            "settings": v.settings(body.get("settings")), "switch": bool(body.get("switch")),
            "policy": v.policy(body, chat=True) or {}}
    return ok(await daemon_of(request).db.create_chat(request.match_info["id"], spec), 201)


async def list_chats(request: web.Request) -> web.Response:
    return ok({"chats": await daemon_of(request).db.list_chats(request.match_info["id"])})


async def switch_chat(request: web.Request) -> web.Response:
    body = v.obj(await body_json(request))
    v.only(body, ("chat",))
    ref = v.req_str(body, "chat", 200)
    db = daemon_of(request).db
    sid = request.match_info["id"]
    chat = await db.resolve_chat(sid, ref)
    return ok(await db.update_session(sid, {"current_chat": chat}, event="chat.switched"))


IDEMPOTENCY_HEADER = "Idempotency-Key"


def idempotency_key(request: web.Request) -> str | None:
    """The request's Idempotency-Key header: 1-255 printable ASCII characters, or absent."""
    key = request.headers.get(IDEMPOTENCY_HEADER)
    if key is not None and not (0 < len(key) <= 255 and all(" " <= ch <= "~" for ch in key)):
        raise Invalid(f"the {IDEMPOTENCY_HEADER} header must be 1 to 255 printable ASCII characters "
                      f"(a new random one per request, e.g. a UUID; the same one only to retry that request)")
    return key


async def append_messages(request: web.Request) -> web.Response:
    body = v.obj(await body_json(request))
    sid = request.match_info["id"]
    key = idempotency_key(request)
    if "messages" in body:
        v.only(body, ("messages", "chat"))
        msgs = body["messages"]
        if not isinstance(msgs, list) or not msgs:
            raise Invalid("messages must be a non-empty list of message objects")
        if len(msgs) > 100_000:
            raise Invalid("at most 100000 messages per request; split the batch")
        checked = v.messages(msgs)
        chat = v.opt_str(body, "chat", 200)
        d = daemon_of(request)
        est = d.estimate
        for m in checked:
            if m.get("tokens") is None:
                m["tokens"] = est(m["content"])
        stored = await d.db.append_messages(sid, checked, chat, key=key)
        # A batch answers with ids, not an echo of every message: the app has the content already.
        return ok({"count": len(stored), "ids": [m["id"] for m in stored], "chat": stored[0]["chat"],
                   "created_at": stored[0]["created_at"], "first_seq": stored[0]["seq"],
                   "last_seq": stored[-1]["seq"]}, 201)
    m = v.message(body)
    d = daemon_of(request)
    if m.get("tokens") is None:
        m["tokens"] = d.estimate(m["content"])
    stored = await d.db.append_messages(sid, [m], m.get("chat"), key=key)
    return ok({**stored[0], "content": m["content"]}, 201)


async def list_messages(request: web.Request) -> web.Response:
    q = request.query
    limit = v.query_int(q, "limit", 100, 1, 100_000)
    all_chats = q.get("all", "").lower() in ("1", "true", "yes")
    db = daemon_of(request).db
    sid = request.match_info["id"]
    chat = q.get("chat")
    if chat is not None:
        chat = await db.resolve_chat(sid, chat)
    rows = await db.list_messages(sid, chat=chat, limit=limit + 1, before=q.get("before"), after=q.get("after"),
                                  all_chats=all_chats)
    if q.get("before") and not q.get("after"):
        more = len(rows) > limit
        rows = rows[-limit:]
        return ok({"messages": rows, "next": rows[0]["id"] if more and rows else None})
    nxt = rows[limit - 1]["id"] if len(rows) > limit else None
    return ok({"messages": rows[:limit], "next": nxt})


async def events(request: web.Request) -> web.StreamResponse:
    d = daemon_of(request)
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await resp.prepare(request)
    queue = d.events.subscribe()
    try:
        await resp.write(b": sessiond events\n\n")
        while True:
            try:
                ev = await asyncio.wait_for(queue.get(), timeout=15)
            except asyncio.TimeoutError:
                await resp.write(b": keep-alive\n\n")
                continue
            if ev is None:
                break
            await resp.write(f"event: {ev['type']}\ndata: {json.dumps(ev)}\n\n".encode())
    except ConnectionResetError:
        pass  # the app went away
    finally:  # a CancelledError (the daemon stopping, the app gone) goes on up: swallowing it hangs shutdown
        d.events.unsubscribe(queue)
    return resp


async def sync_now(request: web.Request) -> web.Response:
    body = v.obj(await body_json(request))
    v.only(body, ("session", "wait", "timeout"))
    sid = v.opt_str(body, "session", 128)
    wait = body.get("wait", False)
    if not isinstance(wait, bool):
        raise Invalid("wait must be true or false")
    timeout = v.number(body.get("timeout", 60), "timeout", 0, 3600)
    return ok(await daemon_of(request).sync_now(sid, wait=wait, timeout=timeout))


async def verify(request: web.Request) -> web.Response:
    body = v.obj(await body_json(request))
    v.only(body, ("session",))
    sid = v.opt_str(body, "session", 128)
    return ok(await daemon_of(request).verify(sid))


async def share(request: web.Request) -> web.Response:
    body = v.obj(await body_json(request))
    v.only(body, ("write", "passphrase", "expires_in"))
    write = body.get("write", False)
    if not isinstance(write, bool):
        raise Invalid("write must be true or false")
    passphrase = v.opt_str(body, "passphrase", 1000)
    if passphrase is not None and len(passphrase) < 8:
        raise Invalid("a passphrase must be at least 8 characters")
    expires_in = body.get("expires_in")
    if expires_in is not None:
        expires_in = v.number(expires_in, "expires_in", 1, 10 * 365 * 86400)
    return ok(await daemon_of(request).share(request.match_info["id"], write=write, passphrase=passphrase,
                                             expires_in=expires_in), 201)


async def import_code(request: web.Request) -> web.Response:
    body = v.obj(await body_json(request))
    v.only(body, ("code", "passphrase"))
    code = v.req_str(body, "code", 20_000)
    passphrase = v.opt_str(body, "passphrase", 1000)
    return ok(await daemon_of(request).import_code(code, passphrase), 201)


async def rekey(request: web.Request) -> web.Response:
    body = v.obj(await body_json(request))
    v.only(body, ("drop",))
    drop = body.get("drop") or []
    if not isinstance(drop, list) or not all(isinstance(d, str) for d in drop):
        raise Invalid("drop must be a list of device ids")
    return ok(await daemon_of(request).rekey(request.match_info["id"], drop))


async def quota(request: web.Request) -> web.Response:
    return ok(await daemon_of(request).db.quota(request.match_info["id"]))


async def context(request: web.Request) -> web.Response:
    db = daemon_of(request).db
    sid = request.match_info["id"]
    chat = request.query.get("chat")
    return ok(await db.context(sid, await db.resolve_chat(sid, chat) if chat else None))


async def compact(request: web.Request) -> web.Response:
    body = v.obj(await body_json(request))
    v.only(body, ("chat", "target_tokens"))
    db = daemon_of(request).db
    sid = request.match_info["id"]
    chat = v.opt_str(body, "chat", 200)
    target = body.get("target_tokens")
    if target is not None:
        target = v.number(target, "target_tokens", 0, 1 << 40, True)
    return ok(await db.compact(sid, await db.resolve_chat(sid, chat) if chat else None, target_tokens=target))


async def uncompact(request: web.Request) -> web.Response:
    body = v.obj(await body_json(request))
    v.only(body, ("chat",))
    db = daemon_of(request).db
    sid = request.match_info["id"]
    chat = v.opt_str(body, "chat", 200)
    return ok(await db.compact(sid, await db.resolve_chat(sid, chat) if chat else None, undo=True))


async def clone(request: web.Request) -> web.Response:
    body = v.obj(await body_json(request))
    v.only(body, ("id", "name"))
    return ok(await daemon_of(request).db.clone(request.match_info["id"], new_id=v.opt_str(body, "id", 128),
                                                name=v.opt_str(body, "name")), 201)


async def fork(request: web.Request) -> web.Response:
    body = v.obj(await body_json(request))
    v.only(body, ("at", "id", "name"))
    return ok(await daemon_of(request).db.fork(request.match_info["id"], v.req_str(body, "at", 300),
                                               new_id=v.opt_str(body, "id", 128), name=v.opt_str(body, "name")), 201)


async def make_checkpoint(request: web.Request) -> web.Response:
    return ok(await daemon_of(request).checkpoint(request.match_info["id"]), 201)


async def list_checkpoints(request: web.Request) -> web.Response:
    return ok({"checkpoints": await daemon_of(request).db.checkpoints(request.match_info["id"])})


async def verify_proof(request: web.Request) -> web.Response:
    body = v.obj(await body_json(request))
    v.only(body, ("proof",))
    proof = v.obj(body.get("proof"), "proof")
    return ok(await daemon_of(request).verify_proof(request.match_info["id"], proof))


async def stats(request: web.Request) -> web.Response:
    q = request.query
    return ok(await daemon_of(request).db.stats(q.get("session"), q.get("user")))


async def cleanup(request: web.Request) -> web.Response:
    body = v.obj(await body_json(request))
    v.only(body, ("older_than", "dry_run"))
    older = v.number(body.get("older_than"), "older_than", 0, 1e10) if body.get("older_than") is not None else None
    if older is None:
        raise Invalid("older_than (seconds) is required")
    dry = body.get("dry_run", False)
    if not isinstance(dry, bool):
        raise Invalid("dry_run must be true or false")
    return ok(await daemon_of(request).cleanup(older, dry_run=dry))


async def export_session(request: web.Request) -> web.Response:
    from .formats import export

    q = request.query
    db = daemon_of(request).db
    sid = request.match_info["id"]
    chat = q.get("chat")
    return ok(await export(db, sid, q.get("format", "json"), await db.resolve_chat(sid, chat) if chat else None))


async def import_file(request: web.Request) -> web.Response:
    from .formats import import_file as do_import

    body = v.obj(await body_json(request))
    v.only(body, ("format", "data"))
    fmt = v.req_str(body, "format", 20)
    if "data" not in body:
        raise Invalid("data (the file's parsed JSON) is required")
    d = daemon_of(request)
    return ok({"sessions": await do_import(d.db, body["data"], fmt, d.estimate)}, 201)


ROUTES: list[Route] = [
    Route("GET", "/v1/status", status, "Daemon version, device id, uptime, counts and sync state", None, "Status"),
    Route("GET", "/v1/openapi.json", openapi, "This OpenAPI document", None, "Any"),
    Route("POST", "/v1/sessions", create_session, "Create a session", "SessionCreate", "Session", 201),
    Route("GET", "/v1/sessions", list_sessions, "List sessions (filter by user, status, tag; paginated)", None,
          "SessionList", query=("user", "status", "tag", "limit", "after")),
    Route("GET", "/v1/sessions/{id}", get_session, "One session with counts and sync state", None, "Session"),
    Route("PATCH", "/v1/sessions/{id}", patch_session, "Change a session's fields", "SessionPatch", "Session"),
    Route("DELETE", "/v1/sessions/{id}", delete_session, "Delete a session and its key from this device", None,
          "Deleted"),
    Route("POST", "/v1/sessions/{id}/pause", pause, "Pause a session (appends are refused)", None, "Session"),
    Route("POST", "/v1/sessions/{id}/resume", resume, "Resume a paused session", None, "Session"),
    Route("POST", "/v1/sessions/{id}/end", end, "End a session", None, "Session"),
    Route("POST", "/v1/sessions/{id}/chats", create_chat, "Create a chat in a session", "ChatCreate", "Chat", 201),
    Route("GET", "/v1/sessions/{id}/chats", list_chats, "List a session's chats", None, "ChatList"),
    Route("POST", "/v1/sessions/{id}/switch", switch_chat, "Make a chat the session's current chat", "Switch",
          "Session"),
    Route("POST", "/v1/sessions/{id}/messages", append_messages,
          "Append one message, or a batch in one transaction; answered after the commit", "Append", "Appended",
          201, headers=(IDEMPOTENCY_HEADER,)),
    Route("GET", "/v1/sessions/{id}/messages", list_messages, "List messages (by chat; limit; before/after)", None,
          "MessageList", query=("chat", "limit", "before", "after", "all")),
    Route("GET", "/v1/sessions/{id}/quota", quota, "Tokens used, quota and warning level", None, "Quota"),
    Route("GET", "/v1/sessions/{id}/context", context, "A chat's active context and compaction state", None,
          "Context", query=("chat",)),
    Route("POST", "/v1/sessions/{id}/compact", compact, "Compact a chat's active context now", "Compact", "Context"),
    Route("POST", "/v1/sessions/{id}/uncompact", uncompact, "Restore a chat's compacted messages to its context",
          "Uncompact", "Context"),
    Route("POST", "/v1/sessions/{id}/clone", clone, "A new session with the same settings, no conversation",
          "Clone", "Session", 201),
    Route("POST", "/v1/sessions/{id}/fork", fork, "A new session with the history up to a message", "Fork",
          "Session", 201),
    Route("POST", "/v1/sessions/{id}/checkpoints", make_checkpoint, "Make a signed checkpoint now", None,
          "Checkpoint", 201),
    Route("GET", "/v1/sessions/{id}/checkpoints", list_checkpoints, "List checkpoints", None, "CheckpointList"),
    Route("POST", "/v1/sessions/{id}/verify-proof", verify_proof, "Check a checkpoint proof against the session",
          "ProofRequest", "ProofResult"),
    Route("GET", "/v1/sessions/{id}/export", export_session, "The session as OpenAI messages or full JSON", None,
          "Any", query=("format", "chat")),
    Route("POST", "/v1/import-file", import_file, "Import OpenAI messages, a session JSON or ChatGPT's "
          "conversations.json", "ImportFile", "ImportFileResult", 201),
    Route("GET", "/v1/stats", stats, "Statistics: one session, one user, or the whole daemon", None, "Any",
          query=("session", "user")),
    Route("POST", "/v1/cleanup", cleanup, "Delete sessions idle for longer than older_than seconds",
          "Cleanup", "CleanupResult"),
    Route("GET", "/v1/events", events, "Server-sent events for every change", None, None),
    Route("POST", "/v1/sessions/{id}/share", share, "Make a share code (read-only, or read-write with write)",
          "ShareRequest", "ShareResult", 201),
    Route("POST", "/v1/sessions/{id}/rekey", rekey,
          "Rotate the session key; every writer device but those dropped keeps access", "RekeyRequest",
          "RekeyResult"),
    Route("POST", "/v1/import", import_code, "Import a session from a share code, verified, all or nothing",
          "ImportRequest", "ImportResult", 201),
    Route("POST", "/v1/sync", sync_now, "Push (and pull) now; optionally wait until done", "SyncRequest", "SyncResult"),
    Route("POST", "/v1/sessions/{id}/complete", complete.handle,
          "Append a user message (optional), send the chat's active context to the model, record and return the "
          "answer (stream: server-sent events of deltas, then the stored message)", "Complete", "Message", 201,
          headers=(IDEMPOTENCY_HEADER,), errors=(502, 504), stream=True),
    Route("POST", "/openai/v1/chat/completions", openai_compat.chat_completions,
          "OpenAI-compatible chat completions, recorded into the session named by X-Sessiond-Session (or a new "
          "one, named in the answer's header)", "ChatCompletionRequest", "Any", headers=(openai_compat.SESSION_HEADER,),
          errors=(502, 504), stream=True),
    Route("GET", "/openai/v1/models", openai_compat.models, "The provider's models (OpenAI-compatible)", None, "Any",
          headers=(openai_compat.SESSION_HEADER,), errors=(502, 504)),
    Route("POST", "/v1/verify", verify, "Verify the pushed snapshots against the local database", "VerifyRequest",
          "VerifyReport"),
]


def error_body(code: str, message: str, **details) -> dict:
    err = {"code": code, "message": message}
    if details:
        err["details"] = details
    return {"error": err}


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except SessiondError as exc:
        return web.json_response(error_body(exc.code, exc.message, **exc.details), status=exc.status)
    except web.HTTPException as exc:
        if exc.content_type == "application/json":
            raise
        code = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}.get(exc.status, "http_error")
        msg = exc.reason
        if exc.status == 404:
            msg = f"no such route: {request.method} {request.path} (see GET /v1/openapi.json)"
        elif exc.status == 405:
            msg = f"{request.method} is not allowed on {request.path}"
        elif exc.status == 413:
            msg = "request body too large"
        return web.json_response(error_body(code, msg), status=exc.status)
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception:  # a bug: log it with its traceback, answer without internals
        log.exception("internal error on %s %s", request.method, request.path)
        return web.json_response(error_body("internal", "internal error; see the daemon log"), status=500)


def make_app(daemon) -> web.Application:
    app = web.Application(middlewares=[errors_middleware], client_max_size=256 << 20)
    app["daemon"] = daemon
    for r in ROUTES:
        app.router.add_route(r.method, r.path, r.handler)
    app["openapi"] = build_openapi(ROUTES, daemon.version)
    return app


__all__ = ["make_app", "ROUTES", "NotFound"]
