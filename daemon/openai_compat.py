"""An OpenAI-compatible endpoint that records any app (issue 16).

POST /openai/v1/chat/completions and GET /openai/v1/models, on the daemon's socket and, when config.toml
sets openai_listen = "HOST:PORT", on that TCP address behind a bearer key kept in the home (0600, made on
the first start). A request names its session with the X-Sessiond-Session header, or gets a new one,
whose id comes back in the same header; and it names its chat with X-Sessiond-Chat (an id or a name, as the
CLI picks chats), else it goes to the session's current chat, which it never switches; the chat's id comes
back in the same header. The request goes on to the session's provider (a stream chunk by
chunk, as each arrives), and the session records only what is new: apps resend the whole history with
every call, so the request's messages are matched against the chat's stored history (role and
content and tool calls, from the start) and only the suffix past what is stored is appended (not again
what an earlier call appended past where the app's history parts from the chat's: openai_history.py), then the
answer (its text, or its tool calls: a stream's deltas put together).
Errors answer in OpenAI's shape: {"error": {"message", "type", "param", "code"}}."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import secrets
import socket
import time

from aiohttp import web

from ..storage.errors import Invalid, LimitReached, SessiondError
from ..storage.fsutil import atomic_write
from ..storage.redact import hide_everywhere
from ..storage.tokens import counted_text
from . import openai_cut, toolcalls
from .answering import AppWatch
from .answers import Plan, end, pass_on, record_whole
from .appkeys import DAEMON_KEY
from .complete import (
    ANSWER_ONLY,
    Ahead,
    check_quota,
    check_writable,
    provider_and_model,
    provider_for,
    request_settings,
)
from .home import HomeError
from .openai_choices import Choices, Others, others_of
from .openai_cut import Made
from .openai_errors import oai_error, refusal
from .openai_history import MATCH_ONLY, own_part, past_stored, request_messages, resent, text_of
from .openai_names import chat_named, chat_of, named, session_named, session_of
from .openai_retries import Retries
from .provider_config import ProviderError
from .providers import reasoning_of, usage_of
from .stopgrace import SETTLED, STOP_GRACE, UNDER_WAY_KEY, install, stop_runner
from .testhooks import pause_for_tests
from .unread import STOP_GRACE as HANG_UP
from .unread import hang_up_stalled, idle_of, send, waits

log = logging.getLogger("sessiond.openai")
PREFIX = "/openai/v1"
MADE = web.RequestKey("sessiond.openai_made", str)  # (the session this request made, its id not given yet)


class Compat:
    """The routes' state: one lock per session, so that two calls of one app match and append in turn."""

    def __init__(self, daemon):
        self.d = daemon
        self._locks: dict[str, asyncio.Lock] = {}
        self.choices = Choices(daemon)  # the other answers of a request for several: one the app goes on from is billed
        self.retries = Retries()  # the sessions requests made that their failure kept, for the SDKs' retries
        self._runner: web.AppRunner | None = None
        self.base_url: str | None = None

    def lock(self, sid: str) -> asyncio.Lock:
        lock = self._locks.get(sid)
        if lock is None:
            if len(self._locks) > 10_000:
                self._locks = {k: lk for k, lk in self._locks.items() if lk.locked()}
            lock = self._locks[sid] = asyncio.Lock()
        return lock

    # ------------------------------------------------------------------ the TCP listener
    async def start_tcp(self, host: str, port: int) -> None:
        key_file = self.d.home.openai_key
        self.key = ensure_key(key_file)
        hide_everywhere(self.key)  # the listener's own bearer key: in no error or log line of the daemon
        app = web.Application(middlewares=[self._auth], client_max_size=256 << 20)
        app[DAEMON_KEY] = self.d
        app.on_shutdown.append(hang_up_stalled)
        install(app)  # (after hang_up_stalled: the requests under way given the stop's grace)
        for method, path, handler in ROUTES:
            app.router.add_route(method, path, handler)
        app.router.add_route("*", "/{tail:.*}", _unrouted)  # last: what no route above takes
        self._runner = web.AppRunner(  # an idle connection closed as the socket's are (aiohttp's default: an hour)
            app,
            handle_signals=False,
            access_log=None,
            keepalive_timeout=self.d.config.connection_idle_timeout,
            shutdown_timeout=SETTLED,  # (the requests' grace is stopgrace's, set at the stop)
        )
        await self._runner.setup()
        sock = socket.create_server(
            (host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET, backlog=256
        )
        await web.SockSite(self._runner, sock).start()
        bound = sock.getsockname()[1]
        shown = f"[{host}]" if ":" in host else host
        self.base_url = f"http://{shown}:{bound}{PREFIX}"
        log.info("OpenAI-compatible endpoint listening", extra={"event": "openai.listen"})

    async def stop(self, grace: float = STOP_GRACE) -> None:
        """Stop the listener, its requests under way given `grace` s (answers.stop_runner)."""
        if self._runner is not None:
            await stop_runner(self._runner, grace)
            self._runner = None

    @web.middleware
    async def _auth(self, request: web.Request, handler):
        with request.app[UNDER_WAY_KEY].track():  # (a stop gives it the grace it sets: stopgrace.py)
            given = request.headers.get("Authorization", "")
            token = given[7:].strip() if given[:7].lower() == "bearer " else ""
            if not hmac.compare_digest(token.encode(), self.key.encode()):
                resp = oai_error(
                    401,
                    "invalid_api_key",
                    "a valid bearer key is required: use the key in the file "
                    "`sessiond status --json` names as openai.api_key_file",
                )
            else:
                resp = await handler(request)
            if waits(request, resp):  # an answer the app may leave unread: timed, as the socket's (unread.py)
                await send(request, resp, idle_of(self.d))
            return resp

    def status(self) -> dict:
        return {
            "base_url": self.base_url,
            "api_key_file": self.d.home.openai_key if self.base_url else None,
            "socket_path": PREFIX,
        }


def ensure_key(path: str) -> str:
    """The listener's bearer key: read it, or make one (0600 from the start; temp file, fsync, rename)."""
    try:
        with open(path, encoding="ascii") as f:
            key = f.read().strip()
        if key:
            return key
    except FileNotFoundError:
        pass
    except UnicodeDecodeError:  # a torn or stray write (never quoted: it holds the key)
        raise HomeError(
            f"{path} is damaged (not ASCII text, as the key it keeps is): delete it, then start again; a new key"
            f" is made, to give to the apps that use the OpenAI-compatible endpoint"
        ) from None
    key = "sk-sessiond-" + secrets.token_urlsafe(32)
    atomic_write(path, (key + "\n").encode(), 0o600)
    return key


# ---------------------------------------------------------------------------------------------- routes
def _compat(request: web.Request) -> Compat:
    return request.app[DAEMON_KEY].compat


async def models(request: web.Request) -> web.Response:
    d = request.app[DAEMON_KEY]
    sid = None
    try:
        sid = session_named(request)
        ref = chat_named(request, sid)
        session = await session_of(d, sid) if sid is not None else {}
        # the provider a question to the session would go to now: its chat's own (the one named, else the
        # current one), else the session's
        chat = await chat_of(d, sid, session, ref) if sid is not None else None
        p = provider_for(d, session, request.query.get("provider") or None, chat)  # (`sessiond models --provider`)
        return web.json_response(await d.providers.models(p))
    except SessiondError as exc:
        return refusal(exc, sid)


NEW_AND_ANSWER = " (the request's new messages and the model's answer, so nothing is sent to the model)"


async def chat_completions(request: web.Request) -> web.StreamResponse:
    try:
        async with contextlib.AsyncExitStack() as answering:  # the question under way until its answer is recorded
            return await _chat_completions(request, answering)
    finally:  # (a first try naming no session: told apart from another app's by its end, openai_retries.py)
        _compat(request).retries.ended(request)
        if (sid := request.pop(MADE, None)) is not None:  # (ended: no start deletes the session it made)
            await request.app[DAEMON_KEY].db.openai_made.given(sid)


async def _chat_completions(request: web.Request, answering: contextlib.AsyncExitStack) -> web.StreamResponse:
    from .routes.common import DuplicateKey, json_error, loads, read_body  # (routes/ imports this module)

    d = request.app[DAEMON_KEY]
    sid = chat_id = None
    try:
        sid = session_named(request)
        chat_ref = chat_named(request, sid)
        raw = await read_body(request)
        try:
            body = loads(raw, strict_numbers=True)  # (passed on to the provider: only what JSON holds)
        except DuplicateKey as exc:
            return oai_error(400, "bad_json", exc.message(), sid)
        except ValueError as exc:
            return oai_error(400, "bad_json", json_error(exc), sid)
        except RecursionError:  # (deeper than Python's JSON reader goes: thousands of brackets)
            return oai_error(400, "bad_json", "request body is nested too deeply to be read", sid)
        if not isinstance(body, dict):
            return oai_error(400, "invalid_request", "the body must be a JSON object", sid)
        msgs = request_messages(body)
        model = body.get("model")
        if model is not None and (not isinstance(model, str) or len(model) > 200):
            raise Invalid("model must be a string of at most 200 characters", param="model")
        stream = body.get("stream", False)
        if not isinstance(stream, bool):
            raise Invalid("stream must be true or false", param="stream")
        if not isinstance(body.get("stream_options"), (dict, type(None))):  # sessiond reads it and adds to it
            raise Invalid('stream_options must be an object ({"include_usage": true}) or null', param="stream_options")
        if not isinstance((body.get("stream_options") or {}).get("include_usage"), (bool, type(None))):
            raise Invalid(  # (as OpenAI does: "no" read for its truth would ask for the usage it meant not to)
                "stream_options.include_usage must be true or false",
                param="stream_options.include_usage",
            )
        # the session this request made (None: it named one): the lamports of the request's messages once recorded,
        # with which its deletion checks that nothing else was written to it (openai_cut.drop_made)
        made: Made | None = None
        if sid is None and (kept := await _retried(d, request, raw)) is not None:
            sid, chat_ref = kept  # an SDK's retry: on in the session its first try made and a failure kept
        fresh = sid is None
        if sid is None:  # a new session for this app; its id comes back in the X-Sessiond-Session header
            p = provider_for(d, {}, None)  # checked first: a request that cannot go anywhere creates nothing
            if not model:
                raise Invalid(
                    "model is required: a call without X-Sessiond-Session makes a new session, which has no model"
                    " of its own to ask (GET /openai/v1/models lists the provider's)",
                    param="model",
                )
            _fits_a_chat(d, msgs)
            session = await d.db.create_session(
                {"model": model, "name": "openai app", "metadata": {"created_by": "openai endpoint"}},
                also=d.db.openai_made.made,  # (noted as made: a kill before its question's append, drop_left)
            )
            sid = request[MADE] = session["id"]  # (its row dropped once its id is given or the request ends)
            await pause_for_tests("openai.made")  # (the tests kill it here: made, its question not recorded)
        async with _compat(request).lock(sid):
            # under way from here: a session made by a request whose app left, which this one waits for (below), is
            # not deleted under it (openai_cut.drop_made: only with no other question under way), as complete.py's
            await answering.enter_async_context(d.answering.under_way(sid, request))
            # an answer whose app left (a Stop, then this request at once) is recorded before this request
            # is matched against the history it ends, not after this request's messages
            await d.answering.settle(sid, request)
            if not fresh:
                # read as it is now: the answers it waited for counted, a delete or end under way over
                # (storage/closing.py: gone, ended or revoked, the app told so, the provider not asked)
                await d.ops.closing.settled(sid)
                session = await session_of(d, sid)
            # the chat named, else the current one; the session's current chat is left as it is, so that
            # apps on several chats of one session never race each other's switches
            chat = await chat_of(d, sid, session, chat_ref)
            chat_id = chat["id"]
            await check_writable(d.db, session)
            check_quota(session)
            # only as much history as the request has messages can match it: a read of O(request), not
            # O(chat), in front of the first token
            history = await d.db.chat_history(sid, chat_id, limit=len(msgs))
            rest = msgs[own_part(session, chat, msgs) :]
            new, parted = past_stored(rest, history)
            went_on = None  # the chat's message where the app's history parts from it, its own next (openai_choices)
            if parted:  # what an earlier call appended past where the app's history parts from the chat's
                at = history[len(rest) - len(new)]
                cut = resent(new, await d.db.chat_history(sid, chat_id, limit=len(new), last=True))
                new, went_on = new[cut:], (None if cut else at)
            await d.db.check_room(sid, chat_id, len(new) + 1, NEW_AND_ANSWER if new else ANSWER_ONLY)
            for m in new:
                for k in MATCH_ONLY:  # (what the history was matched by too: not stored)
                    m.pop(k, None)
                m["tokens"] = d.estimate(counted_text(m))
            billed = None if went_on is None else await _compat(request).choices.billed(sid, chat_id, went_on, new[0])
            if new:  # the quota's room and the context budget, judged as recording them will: before the request
                await d.db.check_fits(sid, chat_id, new)
            # the provider and the model last, as for POST /v1/sessions/ID/complete (complete.prepare)
            p, model = provider_and_model(d, session, chat, None, model)
            # The app's own request goes on as it is (its tools, formats, ...), with sessiond's defaults for
            # the sampling settings it does not give.
            req = {**request_settings(p, session, chat), **{k: x for k, x in body.items() if k != "stream"}}
            plan = Plan(sid, chat_id, p, model, {**req, "model": model})
            # Everything that could refuse the request has run: the provider is asked now, and the question
            # is recorded while it thinks. Nothing reaches the app before the question is committed; if
            # recording it fails, the provider's request is dropped and the app gets that error instead.
            started = time.monotonic()
            ahead = Ahead(d, plan, stream)
            try:
                # The request leaves before the question's SQL runs (a blocking step on the loop): aiohttp
                # builds it in the task's first step and writes its body in a task of its own (on Python
                # 3.11; eagerly from 3.12), so two turns of the loop.
                await asyncio.sleep(0)
                await asyncio.sleep(0)
                await pause_for_tests("openai.asked")  # (the tests hold it here: asked, its question not recorded)
                if new:
                    for m in new:
                        if "call_fields" in m:
                            # the app sent its calls' fields to this provider, which took them: its own, sent
                            # back to it and to no other (one that does not know a field refuses it)
                            m["provider"] = p.name
                    # asked: judged before the request left (check_room, check_fits), recorded past what a write
                    # meanwhile took (refused now, the model's answer would be lost with its prompt billed)
                    # (going on from another of several answers: it is forgotten as billed with them, in the append)
                    # (a session this request made: noted in the question's transaction, its id not given yet, for
                    # a start after a kill to delete it, holding nothing else: drop_left; a fresh one goes on from none)
                    also = d.db.openai_made.making(sid, len(new)) if fresh else billed
                    stored = await d.db.append_messages(sid, new, chat_id, asked=True, also=also)
                    if billed is not None:  # (the tests kill it here: going on from another answer, recorded)
                        await pause_for_tests("openai.went_on")
                    if fresh:
                        await pause_for_tests("openai.question_recorded")  # (the tests kill it here: made, asked)
                        made = Made((stored[0]["lamport"], stored[-1]["lamport"]), request, raw, chat_id)
                        request[MADE] = sid  # (its row dropped once its id is given or the request ends)
            except BaseException:
                await ahead.drop()
                raise
    except SessiondError as exc:
        return refusal(exc, sid, chat_id)
    if not stream:
        try:
            # an app gone before the answer: stopped, nothing recorded; the daemon stopping: the app told so
            async with AppWatch(request, told=d.answering) as watch:
                data = await ahead.answer()
        except ProviderError as exc:
            return await _failed(d, exc, plan, made)
        if watch.gone or watch.stopped:
            await ahead.drop()
            return await (openai_cut.answer_stopped if watch.stopped else openai_cut.answer_left)(d, plan, made)
        choices = data.get("choices") or [{}]
        msg = (choices[0] or {}).get("message") or {}
        text = text_of(msg.get("content"))
        calls = toolcalls.of_answer(msg.get("tool_calls"))
        # the other answers of a request for several: kept with the first, in its record's transaction
        plan.also = _compat(request).choices.remembering(sid, plan.chat, lambda: others_of(data))
        try:
            await record_whole(
                d, plan, text, usage_of(data), started=started, calls=calls, reasoning=reasoning_of(data)
            )
        except SessiondError as exc:  # the session ended or went away meanwhile: OpenAI's error shape, with
            # the answer the app would have had (the chat.completion, as it came) in it: paid for, still its own
            return refusal(exc, sid, chat_id, completion=data)
        return web.json_response(data, headers=named(sid, chat_id))
    return await _stream(request, d, plan, body, ahead, started, made)


async def _retried(d, request: web.Request, raw: bytes) -> tuple[str, str] | None:
    """The session and chat the first try of this request (an SDK's retry, naming no session) made and a failure kept
    (openai_retries.py), if they are still there."""
    kept = d.compat.retries.retried(request, raw)
    if kept is None:
        return None
    try:
        await d.ops.closing.settled(kept[0])  # (a delete or end under way: its outcome)
        await d.db.get_chat(*kept)
        session = await d.db.get_session(kept[0])
        # ended, paused, revoked or out of its quota meanwhile (by the app that wrote to it, the user): refused there,
        # the retry, which names no session, would lose its question to a session its app never named
        await check_writable(d.db, session)
        check_quota(session)
    except SessiondError:  # (deleted, or so, meanwhile: the retry makes a session, as its first try did)
        return None
    return kept


def _fits_a_chat(d, msgs: list[dict]) -> None:
    """Refuse, before its session is made, a new session's first call whose history and answer a chat
    cannot hold (max_messages_per_chat): every message of it is new to the new session's chat."""
    cap = d.db.limits.get("max_messages_per_chat")
    if cap and len(msgs) + 1 > cap:
        raise LimitReached(
            f"the request's {len(msgs)} messages and the model's answer would pass max_messages_per_chat ({cap}),"
            " as many as a chat holds: send a shorter history, or raise max_messages_per_chat in the daemon's"
            " config.toml; no session was made",
            limit="max_messages_per_chat",
            value=cap,
        )


async def _failed(d, exc: ProviderError, plan: Plan, made: Made | None) -> web.Response:
    """A provider's failure before any answer. A session this request made is deleted, with the question it
    holds: its id would reach the app only in this error's header, which SDKs do not read, and each of their
    retries (of a 429 or 5xx) would make another (kept if another app wrote to it meanwhile: drop_made)."""
    if made is not None and await openai_cut.drop_made(d, plan.sid, made):
        return refusal(exc, None)
    return refusal(exc, plan.sid, plan.chat)


async def _stream(
    request: web.Request, d, plan: Plan, body: dict, ahead: Ahead, started: float, made: Made | None
) -> web.StreamResponse:
    want_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    others = Others() if type(body.get("n")) is int and body["n"] > 1 else None  # (several answers asked: their others)
    if others is not None:  # kept with the first answer, in its record's transaction, once the stream ended whole
        plan.also = _compat(request).choices.remembering(plan.sid, plan.chat, others.digests)
    chunks = ahead.chunks
    assert chunks is not None
    try:
        async with AppWatch(request, told=d.answering) as watch:  # as a whole answer's, as one left mid-stream
            head = await ahead.head()
    except ProviderError as exc:
        await chunks.aclose()
        return await _failed(d, exc, plan, made)
    except BaseException:
        await ahead.drop()
        raise
    if watch.gone or watch.stopped:
        await ahead.drop()
        return await (openai_cut.answer_stopped if watch.stopped else openai_cut.answer_left)(d, plan, made)
    resp = web.StreamResponse(
        status=200,
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", **named(plan.sid, plan.chat)},
    )

    def event_of(raw: bytes, chunk: dict, text: str, usage: dict | None) -> bytes | None:
        # passed on as it came (its bytes: nothing decoded and encoded again), one event per chunk; the
        # usage-only chunk sessiond asked for is passed on only to an app that asked for it too
        if others is not None:
            others.add(chunk)
        if not (want_usage or chunk.get("choices") or not usage):
            return None
        if b"\n" in raw:  # sent on several data: lines: passed on as one
            raw = json.dumps(chunk, ensure_ascii=False).encode()
        return b"data: " + raw + b"\n\n"

    if request.pop(MADE, None) is not None:  # the head about to name the session it made: no start deletes it
        await d.db.openai_made.given(plan.sid)
    ended = await pass_on(d, plan, request, resp, chunks, head, event_of, started=started)
    if ended.gone:
        log.info("answer interrupted by the app", extra={"session": plan.sid, "event": "openai.interrupted"})
        # a session this request made, nothing of the answer kept, is deleted (as at the stop) only if the app left
        # before the stream's head, which names it: an app given its id (a chat app's Stop before the model's first
        # word) goes on with it, and no SDK retries a stream it was given (nothing makes a second one)
        if made is not None and ended.stored is None and not ended.began:
            await openai_cut.drop_made(d, plan.sid, made)
        return resp
    if ended.stopped:  # the daemon's stop: the app told so, and what was kept (else it saw a connection broken)
        dropped = made is not None and ended.stored is None and await openai_cut.drop_made(d, plan.sid, made)
        error = openai_cut.stopped(
            ended.stored, plan.sid if made is not None and not dropped else None, dropped=dropped
        )
        await end(request, resp, b"data: " + json.dumps({"error": error}).encode() + b"\n\n", min(idle_of(d), HANG_UP))
    elif ended.error is not None:  # mid-stream: the OpenAI SDKs raise an event carrying "error"
        dropped = False
        error = {"message": ended.error.message, "type": "api_error", "param": None, "code": ended.error.code}
        if isinstance(ended.error, ProviderError):  # (not a record refused: the session ended, went away)
            if made is not None and ended.stored is None:
                # nothing of the answer to keep: the session this request made is deleted, as on a failure
                # before any answer (_failed), so that the app's retry, the same request without the session's
                # header, makes one session holding its question once, none left holding it alone
                dropped = await openai_cut.drop_made(d, plan.sid, made)
            kept = plan.sid if made is not None and not dropped else None
            error.update(openai_cut.way_on(ended.error.message, ended.stored, kept, dropped=dropped))
        await end(request, resp, b"data: " + json.dumps({"error": error}).encode() + b"\n\n", idle_of(d))
    else:
        if others is not None and ended.stored is not None:
            await pause_for_tests("openai.several_recorded")  # (the tests kill it here: the answers all passed on)
        await end(request, resp, b"data: [DONE]\n\n", idle_of(d))
    return resp


ROUTES = [("POST", PREFIX + "/chat/completions", chat_completions), ("GET", PREFIX + "/models", models)]


def unrouted(request: web.Request) -> web.Response:
    """A request none of the endpoint's routes takes (on the socket: one under /openai/), in OpenAI's error
    shape, naming what the endpoint serves: 405 on a path it serves with another method, else 404 (OpenAI's
    "Invalid URL"), which an SDK raises as NotFoundError (an app calling embeddings, the Responses API, ...)."""
    served = " and ".join(f"{m} {p}" for m, p, _ in ROUTES)
    allowed = [m for m, p, _ in ROUTES if p == request.path]
    if allowed:
        return oai_error(
            405,
            "method_not_allowed",
            f"{request.method} is not allowed on {request.path}: sessiond's OpenAI-compatible endpoint serves {served}",
            headers={"Allow": ", ".join(allowed)},
        )
    return oai_error(
        404,
        "unknown_url",
        f"Invalid URL ({request.method} {request.path}): sessiond's OpenAI-compatible endpoint serves {served} only",
    )


async def _unrouted(request: web.Request) -> web.Response:
    return unrouted(request)
