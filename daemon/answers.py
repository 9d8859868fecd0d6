"""A model's answer into the session and on to the app: `Plan` (where the answer goes, what is asked),
`record` (one answer as the chat's next assistant message, with its usage and times) and `pass_on` (a
provider's stream passed on chunk by chunk as each arrives, then recorded as it ended: whole, or marked
interrupted). Both routes that talk to a model use them: POST /v1/sessions/{id}/complete
(complete.py) and the OpenAI-compatible endpoint (openai_compat.py); each says only how a chunk looks
on its wire."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field

from aiohttp import web

from ..api.types import MAX_TEXT
from ..storage.errors import SessiondError
from ..storage.messages import Also
from ..storage.model import ANSWER_KEYS
from ..storage.tokens import counted_text
from .answering import AppWatch
from .provider_config import Provider, ProviderError
from .provider_failures import text_too_large
from .provider_stream import call_chars, delta_text, first_choice
from .providers import reasoning_of, usage_of
from .toolcalls import Answered, Assembled
from .unread import Writes, idle_of

log = logging.getLogger("sessiond.complete")

APP_GONE = (ConnectionResetError, ConnectionError, RuntimeError)  # what writing to an app that went away raises
# the chunks after a call's first delta that its id is waited for in (a server that gives it late gives it
# in the next delta or so; some, vLLM's streams, never do): a call is not held back from the app, nor are
# its parsed chunks kept, while the model writes all of it
HOLD_CHUNKS = 8


@dataclass
class Plan:
    sid: str
    chat: str
    provider: Provider
    model: str
    request: dict  # the chat-completions body, without stream
    answer_key: str | None = None
    done: dict | None = None  # the answer a previous try with the same key recorded
    question: str | None = None  # the id of the question this request recorded (or a try with its key did)
    timing: dict = field(default_factory=dict)
    # the caller's writes in the transaction that records the answer whole, given its text (None: none), as it is
    # recorded (an answer cut, interrupted, none): committed with it, or not at all
    also: Callable[[str], Also | None] | None = None


def left_unasked(sid: str) -> web.Response:
    """The answer to an app that went away before its request was taken: nothing recorded, the model not
    asked; nobody reads this."""
    log.info("the app went away before its question", extra={"session": sid, "event": "complete.app_gone"})
    return web.Response(status=499, text="the app went away before its question was taken; nothing was recorded")


def left(plan: Plan) -> web.Response:
    """The answer to an app that went away before the model's answer reached it: nothing of the answer is
    recorded (the question stays), as for a stream it leaves; nobody reads this."""
    log.info("the app went away before the answer", extra={"session": plan.sid, "event": "complete.app_gone"})
    return web.Response(status=499, text="the app went away before the answer; nothing of it was recorded")


async def record(
    d,
    plan: Plan,
    text: str,
    usage: dict | None,
    *,
    started: float,
    first: float | None,
    interrupted: bool = False,
    error: str | None = None,
    tool_calls: list[dict] | None = None,
    dropped: list[dict] | None = None,
    call_fields: dict | None = None,
    reasoning: int | None = None,
) -> dict:
    """The answer as the chat's next assistant message (its text, and the tools it calls), with its usage
    and times; returned as stored. `dropped`: the calls it made that cannot be recorded (toolcalls.Answered),
    said (dropped_calls) and returned as `tool_calls_dropped`; `call_fields`: the provider's own fields of
    its calls, by call id (toolcalls.fields), kept to be sent back to it; `reasoning`: the hidden tokens its
    usage counts (providers.reasoning_of). Refused, the error's details carry the answer as it would have been
    returned, without its record's id and times (`answer`)."""
    end = time.monotonic()
    m: dict = {
        "role": "assistant",
        "content": text,
        **({"tool_calls": tool_calls} if tool_calls else {}),
        **({"call_fields": call_fields} if tool_calls and call_fields else {}),
        "model": plan.model,
        "provider": plan.provider.name,
        "response": {
            "first_token_ms": round(((first or end) - started) * 1000),
            "total_ms": round((end - started) * 1000),
        },
    }
    m["tokens"] = _answer_tokens(d, plan, usage, m, reasoning)
    if usage:
        m["usage"] = usage
    if interrupted:
        m["interrupted"] = True
    if error:
        m["error"] = error
    also = plan.also(text) if plan.also is not None and not (interrupted or error) else None
    try:
        stored = await d.db.append_messages(plan.sid, [m], plan.chat, key=plan.answer_key, answer=True, also=also)
    except SessiondError as exc:  # refused (the session ended, deleted or revoked meanwhile): the answer is
        # the app's still, paid for: the refusal carries it (`details.answer`), as the message it would have been
        exc.details["answer"] = {"chat": plan.chat, **m, **({"tool_calls_dropped": dropped} if dropped else {})}
        raise
    out = {**stored[0], "content": text, **{k: m[k] for k in ("tool_calls", "call_fields", *ANSWER_KEYS) if k in m}}
    if dropped:
        dropped_calls(d, plan, out["id"], dropped)
        out["tool_calls_dropped"] = dropped
    return out


def _answer_tokens(d, plan: Plan, usage: dict | None, m: dict, reasoning: int | None = None) -> int:
    """The tokens of the answer recorded, `m`, which a chat's context budget counts: the provider's count, or
    the daemon's estimate without one. A request for several answers (OpenAI's `n`) records the first only,
    while the provider counts every answer's tokens (`usage.completion_tokens`, kept as billed: the quota counts
    it, storage/model.py `charge`): its own estimated then, within that count. A reasoning model's count holds
    its hidden thinking too (`reasoning`), which the context never holds: not the answer's."""
    billed = usage.get("completion_tokens") if usage else None
    if billed is None:
        return d.estimate(counted_text(m))
    own = billed - reasoning if reasoning is not None and reasoning <= billed else billed
    n = plan.request.get("n")
    if type(n) is int and n > 1:
        return min(own, d.estimate(counted_text(m)))
    return own


def dropped_calls(d, plan: Plan, message: str, dropped: list[dict]) -> None:
    """Say that a model's answer made tool calls that were not recorded (one with no function name cannot
    be acted on): in the log and as an `answer.tool_call_dropped` event (the session, chat, the answer's
    message and each call's index and reason), nothing of the calls' arguments in either."""
    said = "; ".join(f"call {c['index']}: {c['reason']}" for c in dropped)
    log.warning(
        "session %s: the model's answer (message %s) made tool calls that are not recorded: %s",
        plan.sid,
        message,
        said,
        extra={"session": plan.sid, "event": "complete.tool_call"},
    )
    d.events.publish(
        {
            "type": "answer.tool_call_dropped",
            "session": plan.sid,
            "chat": plan.chat,
            "message": message,
            "calls": dropped,
        }
    )


async def record_whole(
    d,
    plan: Plan,
    text: str,
    usage: dict | None,
    *,
    started: float,
    calls: Answered | None = None,
    reasoning: int | None = None,
) -> dict:
    """`record` of a whole (not streamed) answer, with the tool calls it made (`calls`); refused (the session
    ended or went away meanwhile), the error says that the model's answer is what was not recorded, not
    only why, and carries it (`details.answer`: `record`)."""
    calls = calls or Answered()
    try:
        return await record(
            d,
            plan,
            text,
            usage,
            started=started,
            first=None,
            tool_calls=calls.calls,
            dropped=calls.dropped,
            call_fields=calls.fields,
            reasoning=reasoning,
        )
    except SessiondError as exc:
        exc.message = f"the model's answer was not recorded: {exc.message}"
        exc.args = (exc.message,)
        raise


async def record_streamed(
    d,
    plan: Plan,
    parts: list[str],
    usage,
    *,
    started: float,
    first: float | None,
    gone: bool,
    error,
    calls: Assembled | None = None,
    reasoning: int | None = None,
) -> dict | None:
    """A streamed answer as it ended: recorded whole, or marked interrupted when the app left or the
    provider failed mid-answer (nothing at all is recorded when nothing arrived before that). `calls`: its
    tool-call deltas, put together (the calls whole by then: an interrupted one's cut arguments are kept
    as they arrived, the record marked interrupted)."""
    text = "".join(parts)
    answered = calls.answered() if calls is not None else Answered()
    tool_calls = answered.calls
    if not text and not tool_calls and (gone or error):
        return None
    return await record(
        d,
        plan,
        text,
        usage,
        started=started,
        first=first,
        interrupted=bool(gone or error),
        error=error.code if error else None,
        tool_calls=tool_calls,
        dropped=answered.dropped,
        call_fields=answered.fields,
        reasoning=reasoning,
    )


@dataclass
class Streamed:
    """How a streamed answer ended: the answer as recorded (None: nothing arrived before it stopped, or it
    could not be recorded), the provider's error mid-answer or the record's refusal, and whether the app
    went away."""

    stored: dict | None
    error: SessiondError | None  # the provider's (ProviderError), or why the answer could not be recorded
    gone: bool
    stopped: bool = False  # the daemon's stop ended it (the app still there: the caller tells it so)
    # the response's head (its status and headers: the OpenAI endpoint's names the session) was sent to the app
    began: bool = True


# the event for one chunk on the app's wire, from (its raw bytes, the chunk, the text it adds, its
# usage); None: nothing is sent for it
EventOf = Callable[[bytes, dict, str, dict | None], bytes | None]


async def pass_on(
    d,
    plan: Plan,
    request: web.Request,
    resp: web.StreamResponse,
    chunks: AsyncGenerator[tuple[bytes, dict], None],
    head: tuple[bytes, dict] | None,
    event_of: EventOf,
    *,
    started: float,
) -> Streamed:
    """Pass a provider's stream on to the app (`resp`, prepared here for `request`) chunk by chunk as each
    arrives, from `head`, its first event, already read (errors before it are the caller's: nothing was
    said yet), then record the answer as it ended. A provider error mid-answer ends the stream (returned, for
    the caller's last event); an app gone away (seen at a write, or while waiting for the next chunk) stops
    the generation, keeping what arrived; a cancelled
    request records what arrived even so (shielded) and is cancelled. The stream is closed whatever
    happens. The caller writes the last event (`end`)."""
    parts: list[str] = []
    calls = Assembled()
    held: list[tuple[bytes, dict, str, dict | None]] = []  # events held back while a call waits for its id
    usage = first = reasoning = None
    size = 0  # the characters of text and calls' arguments taken: a message holds MAX_TEXT at most
    error: ProviderError | None = None
    gone = stopped = False
    began = False  # (Streamed.began)

    def recorded(away: bool, failed: ProviderError | None):  # (what arrived so far, as the stream ended)
        return record_streamed(
            d,
            plan,
            parts,
            usage,
            started=started,
            first=first,
            gone=away,
            error=failed,
            calls=calls,
            reasoning=reasoning,
        )

    watch = AppWatch(request, again=True, told=d.answering)  # the daemon's stop: the generation stopped, app told
    out = Writes(request, resp, idle_of(d))  # an app that leaves the answer unread is hung up on (unread.py)
    try:
        try:
            await resp.prepare(request)
            began = True
        except APP_GONE:  # the app left after the provider's first event, before anything was sent to it
            gone = True
        event = head
        while event is not None:
            raw, chunk = event
            text = delta_text(chunk)
            size += len(text) + call_chars(chunk)
            if size > MAX_TEXT:  # neither passed on nor kept: what the app has is what is recorded
                raise text_too_large(plan.provider)
            u = usage_of(chunk)
            usage = u or usage
            reasoning = reasoning_of(chunk) or reasoning
            if text:
                first = first or time.monotonic()
                parts.append(text)
            waited = calls.waiting()
            if calls.add(chunk):  # a call's part: the answer's first token as a word would be
                first = first or time.monotonic()
                # an id given after one was made for its call: passed on without it; a delta given no index
                # (Gemini's): passed on with the one it was put together under
                if calls.changed:
                    raw = json.dumps(chunk, ensure_ascii=False).encode()
            if gone:
                break
            ready = [(raw, chunk, text, u)]
            if waited or calls.waiting():  # a call begun without its id: held until it comes (toolcalls.py)
                held += ready
                if calls.waiting() and not _ends_calls(chunk) and len(held) <= HOLD_CHUNKS:
                    ready = []
                else:
                    ready, held = _ided(calls, held), []
            try:
                await _send(out, event_of, ready)
            except APP_GONE:
                gone = True  # the app went away (Ctrl-C): stop the generation, keep what arrived
                break
            # watched as the first event was: an app that leaves while the model is silent (thinking before
            # its first words, a pause) stops the generation now, not at the next chunk, which it never gets
            if watch.gone:
                gone = True
                break
            if watch.stopped:
                stopped = True
                break
            came = False  # (the wait ended by the watch: nothing in hand)
            async with watch:
                try:
                    event = await chunks.__anext__()
                except StopAsyncIteration:
                    event = None  # (the stream's end)
                came = True
            # a chunk in hand as the watch ended the wait (read off the wire without waiting, the watch begun
            # stopped; or the app's leaving seen just as it came): taken in as the rest was, then the stream ends
            gone, stopped = watch.gone, watch.stopped
            if not came:
                break
        if held and not gone:  # the stream ended with a call still waiting for its id: one is made
            try:
                await _send(out, event_of, _ided(calls, held))
            except APP_GONE:
                gone = True
    except ProviderError as exc:
        error = exc
        if held and not gone:  # what arrived before the failure reaches the app before its error
            with contextlib.suppress(*APP_GONE):
                await _send(out, event_of, _ided(calls, held))
    except asyncio.CancelledError:
        await chunks.aclose()
        if parts or calls.calls():  # recorded even so: shielded from the cancellation of this request
            await asyncio.shield(recorded(True, None))
        raise
    finally:
        watch.close()
        await chunks.aclose()
    try:
        stored = await recorded(gone or stopped, error)
    except SessiondError as exc:  # paused, ended or deleted meanwhile: the app has the text, not a record of it
        said = "the answer above was not recorded" if parts or calls.calls() else "nothing of an answer was recorded"
        exc.message = f"{said}: {exc.message}"
        return Streamed(None, exc, gone, began=began)
    return Streamed(stored, error, gone, stopped and not gone, began)


def _ends_calls(chunk: dict) -> bool:
    """Whether a chunk ends the answer's calls (its choice has a finish_reason): no id comes after it."""
    choice = first_choice(chunk)
    return bool(choice and choice.get("finish_reason"))


def _ided(calls: Assembled, held: list) -> list:
    """The events held while a call waited for its id, each call given its id (the provider's, or one made),
    encoded again: their deltas were changed."""
    calls.name_the_rest()
    return [(json.dumps(chunk, ensure_ascii=False).encode(), chunk, text, u) for _, chunk, text, u in held]


async def _send(out: Writes, event_of: EventOf, events: list) -> None:
    for raw, chunk, text, u in events:
        sent = event_of(raw, chunk, text, u)
        if sent is not None:
            await out.write(sent)


async def end(request: web.Request, resp: web.StreamResponse, last: bytes, idle: float) -> None:
    """The stream's last event and its end; an app that went away by then is no error, and one that leaves
    them unread is hung up on after `idle` seconds (unread.py)."""
    try:
        await Writes(request, resp, idle).end(last)
    except APP_GONE:
        pass
