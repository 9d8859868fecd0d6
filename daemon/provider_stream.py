"""A provider's streamed answer read event by event (issue 16): the server-sent events of a chat-completions
stream into its chunks, each as it arrives, until the provider's `data: [DONE]`; and, after a stream that
ended so, its connection given back for the next request."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator

import aiohttp

from .provider_config import Provider, provider_error
from .provider_failures import bad_answer, provider_message, read_failed, stream_cut
from .streambody import Body, LineTooLong


async def read_events(p: Provider, reader: Body, kind: str = "") -> AsyncGenerator[tuple[bytes, dict], None]:
    """Each chunk of the stream as the provider sent it (the event's data, its bytes) and parsed (a dict).
    Returns after the provider's `data: [DONE]`; a stream that ends without it raises provider_stream_cut, or,
    when no event at all came but other lines did (a proxy's page in the provider's place), provider_bad_answer
    naming what came (`kind`: its Content-Type)."""
    began = texted = False  # a chunk came; one with text or a tool call (OpenAI's first has neither: a role)
    data: list[bytes] = []
    other = b""  # the first line that was no part of an event, while none came
    while True:
        try:
            line = await reader.readline()
        except (TimeoutError, aiohttp.ClientError) as exc:
            when = "in the middle of the answer" if texted else "before any of the answer's text"
            raise read_failed(p, exc, when) from None
        except LineTooLong as exc:
            raise bad_answer(p, f"sent {exc}") from None
        if not line:
            if other and not began:
                raise bad_answer(
                    p, f"answered with no server-sent events ({kind or 'no Content-Type'}): {_shown(p, other)}"
                )
            raise stream_cut(p, "the connection closed without [DONE]")
        line = line.rstrip(b"\r\n")
        if line.startswith(b"data:"):
            data.append(line[5:].lstrip(b" "))
            continue
        if line.strip() and not other and not line.startswith((b":", b"event:", b"id:", b"retry:")):
            other = line
        if line or not data:
            continue  # comments, event names, ids; or a blank line with no event
        payload = b"\n".join(data)
        data = []
        if payload == b"[DONE]":
            return
        try:
            chunk = json.loads(payload)
        except (ValueError, RecursionError):  # (not JSON; or too deep to read)
            raise bad_answer(p, f"sent a stream event that is not JSON: {p.scrub(repr(payload[:120]))}") from None
        if not isinstance(chunk, dict):  # a chunk is an object: anything else is no part of an answer
            raise bad_answer(p, f"sent a stream event that is not a JSON object: {p.scrub(repr(payload[:120]))}")
        if "error" in chunk and not chunk.get("choices"):
            if not began:  # no answer yet: the provider failed, as with a 5xx, it cut nothing
                raise provider_error(
                    "provider_failed",
                    502,
                    f"provider {p.name!r} answered with an error instead of an answer "
                    f"({p.scrub(provider_message(payload))}); retry later",
                    provider=p.name,
                )
            raise stream_cut(p, provider_message(payload))
        began = True
        texted = texted or _answers(chunk)
        yield payload, chunk


def _shown(p: Provider, line: bytes) -> str:
    """A line the provider sent, shown: its text, cut short, scrubbed of its key."""
    return p.scrub(repr(line[:120].decode("utf-8", "replace")))


def _answers(chunk: dict) -> bool:
    """Whether a streamed chunk carries some of the answer: text, or a part of a tool call."""
    if delta_text(chunk):
        return True
    choice = first_choice(chunk)
    delta = choice.get("delta") if choice is not None else None
    return isinstance(delta, dict) and bool(delta.get("tool_calls"))


def first_choice(chunk: dict) -> dict | None:
    """The streamed chunk's part of the answer sessiond records: its choice of index 0 (or of none). A request
    for several answers (`n`) streams the others too, each chunk naming its choice's index: not the answer's."""
    choices = chunk.get("choices")
    if not choices or not isinstance(choices, list):
        return None
    return next((c for c in choices if isinstance(c, dict) and c.get("index", 0) in (0, None)), None)


def delta_text(chunk: dict) -> str:
    """The text a streamed chunk adds (its first choice's delta.content)."""
    choice = first_choice(chunk)
    delta = (choice.get("delta") or {}) if choice is not None else {}
    text = delta.get("content") if isinstance(delta, dict) else None
    return text if isinstance(text, str) else ""


def call_chars(chunk: dict) -> int:
    """The characters of tool-call arguments a streamed chunk adds (its first choice's deltas)."""
    choice = first_choice(chunk)
    delta = choice.get("delta") if choice is not None else None
    deltas = delta.get("tool_calls") if isinstance(delta, dict) else None
    if not isinstance(deltas, list):
        return 0
    n = 0
    for d in deltas:
        f = d.get("function") if isinstance(d, dict) else None
        args = f.get("arguments") if isinstance(f, dict) else None
        n += len(args) if isinstance(args, str) else 0
    return n


class Drains:
    """The ends of streams read in the background. A stream that ended with [DONE] gives its connection back
    for the next request: a new TCP connection (and the provider's accept) in front of every first token
    costs more than the answer's own bookkeeping. The end of the chunked body may not have arrived with
    [DONE]; it is read here (a few bytes), so that the answer's end is not held up by it."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task] = set()

    def keep(self, resp: aiohttp.ClientResponse, reader: Body) -> None:
        if resp.content.at_eof():
            reader.stop()
            resp.release()
            return
        task = asyncio.ensure_future(_drain(resp, reader))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def settled(self) -> None:
        """Returns once the streams that ended have given their connections back (or dropped them)."""
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def cancel(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await self.settled()


async def _drain(resp: aiohttp.ClientResponse, reader: Body) -> None:
    try:
        await reader.stopped()  # past [DONE], what is left is read here
        left = 1 << 16  # past [DONE] a provider sends nothing more: a connection that does is dropped
        while left > 0 and not resp.content.at_eof():
            got = await resp.content.readany()  # bounded by the request's sock_read timeout
            if not got:
                break
            left -= len(got)
    except asyncio.CancelledError:
        resp.close()
        raise
    except Exception:  # cut, timed out: that connection is not reused
        resp.close()
        return
    if resp.content.at_eof():
        resp.release()  # back to the pool (aiohttp reuses it only if the body was read to its end)
    else:
        resp.close()
