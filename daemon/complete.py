"""Talking to a model (issue 16): POST /v1/sessions/{id}/complete appends the user's message, sends the
chat's active context with the session's settings to its provider, and records the answer with the
provider's usage and response times, as one JSON answer or as a server-sent-event stream of deltas.

Before anything is sent, in this order (the OpenAI endpoint's too): the session's access (read-only,
revoked), its expiry and status (expired, ended, paused), its quota (quota_exceeded), the chat's room,
and only then the provider and the model (no_provider, invalid); and appending the question compacts
the chat first if its context budget says so, as every append does. A provider error leaves the
question recorded; an answer that stopped early (the provider cut the stream, the app went away) is
recorded with what arrived, marked "interrupted": true; an app gone before the provider's first chunk
(or whole answer) stops the generation and records no answer (answers.AppWatch); one gone before its
request was taken (Ctrl-C just after the send, the daemon busy) has nothing recorded, not even the question. With an
Idempotency-Key, a retried request stores neither the question nor the answer twice, and asks the model
again only if no answer was recorded the first time."""

from __future__ import annotations

import asyncio
import json
import logging
import shlex
import time

from aiohttp import web

from ..storage.errors import (
    IdempotencyKeyReused,
    Invalid,
    LimitReached,
    QuotaExceeded,
    SessiondError,
    Stopping,
    check_access,
    quota_exhausted,
    quota_ways_api,
    quota_ways_out,
    session_path,
)
from ..storage.expiry import past_expiry
from ..storage.model import now
from . import sendable, toolcalls
from . import validate as v
from .answering import STOP_CUT, AppWatch, gone_before
from .answers import Plan, end, left, left_unasked, pass_on, record_whole
from .provider_config import NoProvider, Provider, ProviderError
from .providers import reasoning_of, usage_of
from .testhooks import pause_for_tests
from .unread import STOP_GRACE as HANG_UP
from .unread import idle_of

log = logging.getLogger("sessiond.complete")


# what check_room names, when asking a model would pass max_messages_per_chat
WITH_ANSWER = " (the question and the model's answer, so nothing is sent to the model)"
ANSWER_ONLY = " (the model's answer, so nothing is sent to the model)"


class Ahead:
    """A provider request sent before the question is recorded (the OpenAI endpoint): the provider thinks
    while the question's transaction commits. The stream's first chunk (or the whole JSON answer) is
    awaited in a task of its own; `drop` cancels it and closes the connection, which stops the generation,
    when recording the question failed or the app went away first."""

    def __init__(self, d, plan: Plan, stream: bool):
        self.chunks = d.providers.stream(plan.provider, plan.request) if stream else None
        self._task: asyncio.Future = asyncio.ensure_future(
            self._first() if stream else d.providers.complete(plan.provider, plan.request)
        )

    async def _first(self):
        assert self.chunks is not None
        try:
            return await self.chunks.__anext__()
        except StopAsyncIteration:
            return None

    async def head(self) -> tuple[bytes, dict] | None:
        """The stream's first event, or None if it had none."""
        return await self._task

    async def answer(self) -> dict:
        return await self._task

    async def drop(self) -> None:
        self._task.cancel()
        await asyncio.wait([self._task])
        if not self._task.cancelled():
            self._task.exception()  # retrieved: a provider error nobody will answer with is not logged
        if self.chunks is not None:
            await self.chunks.aclose()


async def check_writable(db, session: dict) -> None:
    sid = session["id"]
    check_access(sid, session["access"], "add to it")
    if past_expiry(session, now()):
        await db.check_expiry(session)  # past its expiry or idle timeout: refused (and ended) before a model is asked
    if session["status"] != "active":
        await db.refuse_inactive(sid, session["status"])  # (one its expiry ended: as expired)


def check_quota(session: dict) -> None:
    quota = (session.get("policy") or {}).get("token_quota")
    used = session["tokens_used"]
    if quota and used >= quota:
        sid = session["id"]
        raise QuotaExceeded(
            f"{quota_exhausted(sid, used, quota)}, so nothing is sent to the model. " + quota_ways_out(sid),
            used=used,
            quota=quota,
            needed=0,
            api=quota_ways_api(sid),
        )


def provider_for(d, session: dict, name: str | None, chat: dict | None = None) -> Provider:
    """The provider a question goes to: the one it names, else its chat's own (the chat's settings, as its
    model and sampling settings override the session's), else the session's, else the default. One this
    device has not (a setting synced from a device configured otherwise) is refused naming the setting that
    chose it, and the command that changes it."""
    own = ((chat or {}).get("settings") or {}).get("provider")
    sessions = (session.get("settings") or {}).get("provider")
    try:
        return d.providers.get(name or own or sessions)
    except NoProvider as exc:
        if name or not (own or sessions):
            raise  # the request named it, or none is configured: the refusal says what to do
        sid, cid = session["id"], (chat or {}).get("id")
        said = (
            f"chat {cid!r} of session {sid} asks provider {own!r}: change it for good with"
            f" `sessiond chat set {sid} {cid} --provider NAME` (or `--unset provider`)"
            if own
            else f"session {sid} asks provider {sessions!r}: change it for good with"
            f" `sessiond set {sid} --provider NAME` (or `--unset provider`)"
        )
        # in API terms: the setting changed for good (PROVIDER: one of details.configured), or cleared
        where = session_path(sid, "chats", str(cid)) if own else session_path(sid)
        ways = [f'PATCH {where} {{"settings": {{"provider": {v}}}}}' for v in ("PROVIDER", "null")]
        raise NoProvider(f"{exc.message}; {said}", **{**exc.details, "api": ways}) from None


def provider_and_model(d, session: dict, chat: dict, provider: str | None, model: str | None) -> tuple[Provider, str]:
    """The provider and the model a question to `session`'s `chat` goes to (`provider`, `model`: the
    request's), or the refusal saying which is missing. Checked after the session's own refusals
    (check_writable, check_quota, the chat's room): the last of a model call's refusals."""
    p = provider_for(d, session, provider, chat)
    model = model or chat.get("model") or session.get("model")
    if not model:
        sid = session["id"]
        q = shlex.quote(sid)
        raise Invalid(
            f"no model to ask: session {sid!r} sets none; `sessiond models --provider {shlex.quote(p.name)}` lists"
            f" the models of provider {p.name!r}, then set one, `sessiond set {q} --model NAME`, or give one for this"
            f" question, `sessiond ask {q} --model NAME TEXT`",
            api=[
                f'PATCH {session_path(sid)} {{"model": MODEL}}',
                f'POST {session_path(sid, "complete")} {{"model": MODEL, ...}}',
                "GET /openai/v1/models",
            ],
        )
    return p, model


def request_settings(provider: Provider, session: dict, chat: dict) -> dict:
    """The session's sampling settings (a chat's own override them) as chat-completions parameters."""
    s = {**(session.get("settings") or {}), **(chat.get("settings") or {})}
    out = {k: s[k] for k in ("temperature", "top_p", "max_tokens") if s.get(k) is not None}
    if provider.top_k and s.get("top_k") is not None:
        out["top_k"] = s["top_k"]
    return out


async def prepare(
    d, sid: str, *, content: str | None, chat: str | None, model: str | None, provider: str | None, key: str | None
) -> Plan:
    """Everything checked, the question recorded, the request to the provider built."""
    db = d.db
    await d.ops.closing.settled(sid)  # a delete, end or revocation under way: its outcome first (nothing asked)
    session = await db.get_session(sid)
    # the chat a keyed request's first try recorded its question in, if it did (a retry of one naming no chat asks
    # that one, current then: another app may have switched the session to another since)
    recorded = await _question_chat(db, sid, key)
    chat_id = await db.resolve_chat(sid, chat) if chat else recorded or session["current_chat"]
    chat_row = await db.get_chat(sid, chat_id)
    answer_key = f"{key}:answer" if key is not None else None
    if answer_key is not None:
        seen = await db.idempotent_result(sid, answer_key)
        if seen:  # a retry of a request that got its answer: the same answer, nothing asked or stored again
            p, model = provider_and_model(d, session, chat_row, provider, model)
            if content is not None:  # answered from its record (or refused)
                await _question(d, sid, content, chat_id, key)
            return Plan(sid, chat_id, p, model, {}, answer_key, done=await db.get_message(sid, seen[0]["id"]))
    # The session's own refusals first (README, "Errors"): their way on is the session's, which a provider
    # configured here would not give (a revoked device needs a new share code, not a provider).
    await check_writable(db, session)
    try:
        check_quota(session)
    except QuotaExceeded as exc:
        # a retry whose first try recorded its question (charged it) and got no answer is judged as that try was,
        # before its question: the quota it had room in was spent by that question, not by the retry
        asked = (
            await db.idempotent_result(sid, f"{key}:question") if content is not None and recorded == chat_id else None
        )
        if not asked or session["tokens_used"] - sum(m.get("tokens") or 0 for m in asked) >= exc.details["quota"]:
            raise
    # room for the answer too: one that could not be recorded would be lost, its tokens spent; a retry's question
    # that its first try recorded (in this chat) is there already, and its answer alone needs room
    try:
        await db.check_room(
            sid, chat_id, 2 if content is not None else 1, WITH_ANSWER if content is not None else ANSWER_ONLY
        )
    except LimitReached:
        if content is None or recorded != chat_id:
            raise
        await db.check_room(sid, chat_id, 1, ANSWER_ONLY)
    p, model = provider_and_model(d, session, chat_row, provider, model)
    question = None
    if content is not None:  # the question is recorded first: it stays, whatever the model does
        question = await _question(d, sid, content, chat_id, key)
    messages = []
    system = chat_row.get("system_prompt") or session.get("system_prompt")
    if system:
        messages.append({"role": "system", "content": system})
    for m in session.get("initial_messages") or []:  # (their calls' fields, an app's, go to any provider)
        messages.append(toolcalls.openai_message(m, p.name))
    messages += [toolcalls.openai_message(m, p.name) for m in await db.context_messages(sid, chat_id)]
    # as the model takes them (sendable.py); what the session holds is as it was given
    sent = sendable.history(messages)
    if content is None and all(m["role"] == "system" for m in sent):
        raise sendable.nothing_to_answer(session, chat_id)
    if content is None and (ids := sendable.unanswered(sent)):
        raise sendable.calls_unanswered(session, chat_id, ids)
    req = {"model": model, "messages": sent, **request_settings(p, session, chat_row)}
    return Plan(sid, chat_id, p, model, req, answer_key, question=question)


async def _question_chat(db, sid: str, key: str | None) -> str | None:
    """The chat a request sent with Idempotency-Key `key` recorded its question in already (a first try that got no
    answer: the provider failed, the daemon stopped; or one that did), which the retry's `_question` does not store
    again; None if it recorded none."""
    seen = await db.idempotent_result(sid, f"{key}:question") if key is not None else None
    return seen[0].get("chat") if seen else None


async def _question(d, sid: str, content: str, chat: str, key: str | None) -> str:
    """The question recorded as the chat's next user message (under `key`'s record of its question, so a
    retry stores it once), and its id. The same key with another question is refused naming the key the app
    sent, not the record's own (KEY:question)."""
    try:
        (stored,) = await d.db.append_messages(
            sid,
            [{"role": "user", "content": content, "tokens": d.estimate(content)}],
            chat,
            key=f"{key}:question" if key is not None else None,
        )
        return stored["id"]
    except IdempotencyKeyReused:
        raise IdempotencyKeyReused(
            f"Idempotency-Key {key!r} was already used for another question in session {sid!r}; send a new key"
            f" with each new request (the same key only to retry it)"
        ) from None


def _answer(data: dict) -> tuple[str, toolcalls.Answered]:
    """A whole answer's text and the tools it calls."""
    choices = data.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        msg = choices[0].get("message") or {}
        if isinstance(msg, dict):
            text = msg.get("content")
            return (text if isinstance(text, str) else ""), toolcalls.of_answer(msg.get("tool_calls"))
    return "", toolcalls.Answered()


def sse(event: str, data) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


async def handle(request: web.Request) -> web.StreamResponse:
    from ..api.idempotency import IDEMPOTENCY_HEADER
    from .routes.common import body as read_body
    from .routes.common import daemon_of

    body = await read_body(request)  # checked against api/complete.py Complete
    d = daemon_of(request)
    sid = request.match_info["id"]
    key = v.idempotency_key(request.headers.get(IDEMPOTENCY_HEADER))
    await pause_for_tests("complete.start")  # (the tests hold a request here, not yet taken)
    # An answer whose app left (a stream stopped, then this question at once) is recorded before this question.
    async with d.answering.under_way(sid, request):
        await d.answering.settle(sid, request)
        if key is None:
            if await gone_before(request):
                return left_unasked(sid)
            return await _ask(request, d, sid, body, None)
        # A retry that comes while its first try still waits for the model (an app that timed out, two of its
        # workers sending one request) waits for that try to end, then is answered from its record: the model
        # asked once, not twice with the second answer refused (its key's record already held the first).
        async with d.asking(f"{sid}\n{key}"):
            # (under the key's lock: a read of what the key recorded, GET ?key=, made once the app had left,
            # came before this, or waits for its end)
            if await gone_before(request):
                return left_unasked(sid)
            return await _ask(request, d, sid, body, key)


async def _ask(request: web.Request, d, sid: str, body: dict, key: str | None) -> web.StreamResponse:
    from .routes.common import ok

    stream = body.get("stream", False)
    asked = {k: body[k] for k in ("model", "provider") if body.get(k) is not None}
    plan = await prepare(
        d,
        sid,
        content=body.get("content"),
        chat=body.get("chat"),
        model=body.get("model"),
        provider=body.get("provider"),
        key=key,
    )
    try:
        if not stream:
            if plan.done is not None:
                return ok(plan.done)
            started = time.monotonic()
            # an app gone before the answer: stopped, nothing recorded; the daemon stopping: the app told so
            async with AppWatch(request, told=d.answering) as watch:
                data = await d.providers.complete(plan.provider, plan.request)
            if watch.stopped:
                raise _stopped(plan, asked)
            if watch.gone:
                return left(plan)
            text, calls = _answer(data)
            reasoning = reasoning_of(data)
            return ok(
                await record_whole(d, plan, text, usage_of(data), started=started, calls=calls, reasoning=reasoning),
                201,
            )
        return await _stream(request, d, plan, asked)
    except ProviderError as exc:  # before any answer: the question stays, and the way to have it answered is named
        _way_on(exc, plan, asked)
        raise


def _way_on(exc: SessiondError, plan: Plan, asked: dict) -> None:
    """A failure that left the question this request recorded unanswered (nothing of an answer recorded): its
    details name the question and the way to have it answered (the request again without its content)."""
    if plan.question is not None:
        exc.details["question"] = plan.question
        exc.details["api"] = [_again_api(plan, asked)]
    if exc.details.get("provider_code") == "context_length_exceeded":  # asked again as it is, refused again
        sid, chat = shlex.quote(plan.sid), shlex.quote(plan.chat)
        exc.message += (
            f"; the chat holds more than the model takes: compact it (`sessiond compact {sid} --chat {chat}"
            f" --target-tokens N`), or give it a context budget below the model's, which compacts it before each"
            f" question (`sessiond chat set {sid} {chat} --max-context-tokens N`)"
        )
        exc.args = (exc.message,)


def _stopped(plan: Plan, asked: dict) -> Stopping:
    """The refusal of a question whose model the daemon's stop stopped before its answer: the question kept,
    nothing of an answer; the way to have it answered once the daemon runs again named (`_way_on`)."""
    kept = ", the question is" if plan.question is not None else ""
    exc = Stopping(
        f"{STOP_CUT} before it began; nothing of it was recorded{kept}: start the daemon again"
        f" (`sessiond start`), then {_again_cli(plan, asked)}"
    )
    _way_on(exc, plan, asked)
    return exc


def _again_cli(plan: Plan, asked: dict) -> str:
    """The command that has the model answer `plan`'s chat as it stands, with the model and provider the request
    chose (`asked`), if any: without them, `--again` asks the chat's or the session's own."""
    chosen = (("--chat", plan.chat), *((f"--{k}", v) for k, v in asked.items()))
    flags = "".join(f" {flag} {shlex.quote(value)}" for flag, value in chosen)
    return f"`sessiond ask {plan.sid}{flags} --again`"


def _again_api(plan: Plan, asked: dict) -> str:
    """The request that has the model answer `plan`'s chat as it stands (no question), with the model and
    provider the request chose (`asked`), if any."""
    return f"POST /v1/sessions/{plan.sid}/complete {json.dumps({'chat': plan.chat, **asked})}"


def _cut_way_on(plan: Plan, asked: dict, error: SessiondError, stored: dict) -> SessiondError:
    """A provider's failure mid-answer, whose part that arrived is recorded (`stored`, marked interrupted):
    the error naming that message and the way on, in words and in API terms (details.message_id, api): the
    model asked again answers the chat, which ends in that part."""
    said = (
        f"{error.message}; what arrived is recorded as message {stored['id']}, marked interrupted: to have the"
        f" model answer again, {_again_cli(plan, asked)}"
    )
    out = SessiondError(said)
    out.code, out.status = error.code, error.status
    out.details = {**error.details, "message_id": stored["id"], "api": [_again_api(plan, asked)]}
    return out


async def _stream(request: web.Request, d, plan: Plan, asked: dict) -> web.StreamResponse:
    resp = web.StreamResponse(status=200, headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    if plan.done is not None:
        await resp.prepare(request)
        await resp.write(sse("delta", {"content": plan.done["content"]}))
        await resp.write(sse("message", plan.done))
        return resp
    started = time.monotonic()
    chunks = d.providers.stream(plan.provider, plan.request)
    # Errors before the first chunk (unreachable, 401, 404, 429, a timeout) answer as JSON with their own
    # status: nothing has been said yet.
    head = None
    async with AppWatch(request, told=d.answering) as watch:  # as a whole answer's, as one left mid-stream
        try:
            head = await chunks.__anext__()
        except StopAsyncIteration:
            pass
    if watch.gone or watch.stopped:
        await chunks.aclose()
        if watch.stopped:
            raise _stopped(plan, asked)
        return left(plan)
    await pause_for_tests("complete.head")
    ended = await pass_on(d, plan, request, resp, chunks, head, _delta, started=started)
    if ended.gone:
        log.info("answer interrupted by the app", extra={"session": plan.sid, "event": "complete.interrupted"})
        return resp
    # the daemon's stop: the app told so and what was kept, as for a provider's failure (else its connection broke)
    error = ended.error
    if ended.stopped:
        error = Stopping(f"{STOP_CUT}; start the daemon again (`sessiond start`) before asking")
    if error is not None:
        if ended.stored is not None:
            error = _cut_way_on(plan, asked, error, ended.stored)
        else:  # (a stream cut before its first word: as a failure before its head)
            _way_on(error, plan, asked)
        body = {
            "error": {
                "code": error.code,
                "message": error.message,
                "status": error.status,  # what the route would have answered, had nothing been said yet
                **({"details": error.details} if error.details else {}),
            }
        }
        if ended.stored is not None:
            body["message"] = ended.stored
        # (the stop's: not waited for past its grace by an app that leaves it unread)
        await end(request, resp, sse("error", body), min(idle_of(d), HANG_UP) if ended.stopped else idle_of(d))
    else:
        await end(request, resp, sse("message", ended.stored), idle_of(d))
    return resp


async def asked(request: web.Request) -> web.StreamResponse:
    """GET /v1/sessions/{id}/complete?key=K: the question and the answer the request sent with Idempotency-Key
    K recorded, once no request with that key is being answered (one whose app left is ended first: its
    partial answer recorded, or nothing). `sessiond ask` stopped by Ctrl-C names them from this."""
    from .routes.common import daemon_of, ok, query

    d = daemon_of(request)
    sid, key = request.match_info["id"], query(request)["key"]
    async with d.asking(f"{sid}\n{key}"):  # (as a retry waits for its first try)
        pass
    await d.db.get_session(sid)  # an unknown session: 404, not "nothing recorded"
    out: dict = {"key": key}
    for part, suffix in (("question", "question"), ("answer", "answer")):
        seen = await d.db.idempotent_result(sid, f"{key}:{suffix}")
        out[part] = await d.db.get_message(sid, seen[0]["id"]) if seen else None
    return ok(out)


def _delta(raw: bytes, chunk: dict, text: str, usage: dict | None) -> bytes | None:
    """A chunk on this route's wire: a `delta` event with the text it adds (none for a chunk with none)."""
    return sse("delta", {"content": text}) if text else None
