"""The model providers of config.toml (issue 16) and the client that talks to them: one aiohttp session
shared by all requests, JSON answers (a completion, the model list) and streamed completions (read by
provider_stream.py); and what an answer's chunks say. A provider's config and errors: provider_config.py;
what its failures are called: provider_failures.py."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from typing import Any

import aiohttp

from ..api.types import MAX_TEXT, MAX_TOKENS
from .provider_config import NoProvider, Provider, provider_error
from .provider_failures import (
    MAX_ANSWER_BYTES,
    bad_answer,
    classify,
    provider_message,
    read_failed,
    text_too_large,
    timed_out,
    too_large,
    unreachable,
)
from .provider_stream import Drains, first_choice, read_events
from .streambody import Body
from .toolcalls import Assembled


class Providers:
    """The configured providers, and one HTTP client session shared by all requests to them."""

    def __init__(self, tables: dict, default: str | None, config_file: str = "config.toml in the daemon's home"):
        self.config_file = config_file  # (named in the refusal of a question no provider is configured for)
        self.all = {name: Provider(name, **t) for name, t in tables.items()}
        for p in self.all.values():
            p.hide_secrets()
        self.default = default
        self._http: aiohttp.ClientSession | None = None
        self._drains = Drains()  # streams' ends read in the background

    def get(self, name: str | None) -> Provider:
        configured = sorted(self.all)  # (details.configured: the names an app may choose among)
        if name is None:
            name = self.default
            if name is None and self.all:  # several, none of them the default (one alone is: daemon/home.py)
                raise NoProvider(
                    f"no default model provider: {self.config_file} configures {', '.join(configured)}"
                    ' and names none as default_provider: set default_provider = "NAME" at its top, then restart'
                    " the daemon; or choose one for a question (`sessiond ask --provider NAME`, `sessiond models"
                    " --provider NAME`) or for the session (`sessiond set ID --provider NAME`)",
                    reason="no_default",
                    configured=configured,
                    owner=[f'set default_provider = "NAME" at the top of {self.config_file}, then restart the daemon'],
                )
            if name is None:
                raise NoProvider(
                    "no model provider is configured: add a [providers.NAME] table with base_url "
                    f"(and default_provider) to {self.config_file}, then restart the daemon",
                    reason="none_configured",
                    configured=configured,
                    owner=[
                        f"add a [providers.NAME] table with base_url (and default_provider) to {self.config_file},"
                        " then restart the daemon"
                    ],
                )
        p = self.all.get(name)
        if p is None:
            raise NoProvider(
                f"no provider {name!r} in this device's config.toml (configured: "
                f"{', '.join(configured) or 'none'}); add [providers.{name}] or choose another",
                reason="not_configured",
                provider=name,
                configured=configured,
                owner=[f"add a [providers.{name}] table with base_url to {self.config_file}, then restart the daemon"],
            )
        return p

    def http(self) -> aiohttp.ClientSession:
        if self._http is None:
            self._http = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300), auto_decompress=True
            )
        return self._http

    async def settled(self) -> None:
        """Returns once the streams that ended have given their connections back (or dropped them)."""
        await self._drains.settled()

    async def close(self) -> None:
        await self._drains.cancel()
        if self._http is not None:
            await self._http.close()
            self._http = None

    def _timeout(self, p: Provider, stream: bool) -> aiohttp.ClientTimeout:
        # An answer may take long; what must not last is a silence: before the first byte, or between two
        # chunks of a stream, at most `timeout` seconds.
        return aiohttp.ClientTimeout(total=None, sock_connect=p.connect_timeout, sock_read=p.timeout)

    async def _open(self, p: Provider, method: str, path: str, body: Any, stream: bool) -> aiohttp.ClientResponse:
        headers = p.headers()
        try:
            resp = await self.http().request(
                method, p.base_url + path, json=body, headers=headers, timeout=self._timeout(p, stream)
            )
        except TimeoutError:
            raise timed_out(p, "no answer") from None
        except (aiohttp.ClientConnectionError, aiohttp.InvalidURL, OSError) as exc:
            raise unreachable(p, exc) from None
        if resp.status >= 400:
            try:
                raw = await _read_up_to(resp, 1 << 20)  # (only its first few hundred characters are shown)
            except (TimeoutError, aiohttp.ClientError):
                raw = b""
            finally:
                _let_go(resp)
            model = body.get("model") if isinstance(body, dict) else None
            raise classify(p, resp.status, raw, resp.headers, model, path)
        return resp

    async def request_json(self, p: Provider, method: str, path: str, body: Any = None) -> dict:
        """One JSON request (a non-streamed completion, the model list)."""
        return await _json_of(p, await self._open(p, method, path, body, False))

    async def complete(self, p: Provider, body: dict) -> dict:
        """A completion asked whole. A provider that streams it anyway (an event stream, as some servers and
        proxies do) has its chunks put together into the whole answer."""
        body = {k: x for k, x in body.items() if k != "stream_options"}  # only for streams
        resp = await self._open(p, "POST", "/chat/completions", {**body, "stream": False}, False)
        if resp.content_type == "text/event-stream":
            return _whole(p, await put_together(p, self._events(p, resp)))
        return _whole(p, await _json_of(p, resp))

    async def models(self, p: Provider) -> dict:
        return await self.request_json(p, "GET", "/models")

    async def stream(self, p: Provider, body: dict) -> AsyncIterator[tuple[bytes, dict]]:
        """A streamed completion: each chunk as it arrives, as the provider sent it (the event's data, its
        bytes) and parsed (a dict; the OpenAI endpoint passes the bytes on, the text is read from the dict). Ends
        after the provider's `data: [DONE]`; a stream that ends without it raises provider_stream_cut. A provider
        that does not stream, answering with the whole answer's JSON, gives it as the one chunk.
        Closing the iterator early closes the connection, which stops the provider's generation."""
        body = {**body, "stream": True}
        opts = dict(body.get("stream_options") or {})
        opts["include_usage"] = True
        body["stream_options"] = opts
        resp = await self._open(p, "POST", "/chat/completions", body, True)
        if resp.content_type == "application/json":
            chunk = as_chunk(_whole(p, await _json_of(p, resp)))
            yield json.dumps(chunk, ensure_ascii=False).encode(), chunk
            return
        async with aclosing(self._events(p, resp)) as events:
            async for event in events:
                yield event

    async def _events(self, p: Provider, resp: aiohttp.ClientResponse) -> AsyncGenerator[tuple[bytes, dict], None]:
        """The chunks of an event stream's answer (`resp`), as stream() gives them; its connection given back
        after [DONE], else closed (which stops the provider's generation)."""
        done = False
        reader = Body(resp.content)  # all that arrived is read before a failure of the connection is raised
        try:
            async with aclosing(read_events(p, reader, resp.content_type)) as events:
                async for event in events:
                    yield event
            done = True
        finally:
            if done:
                self._drains.keep(resp, reader)
            else:
                reader.stop()
                resp.close()  # stops the provider's generation if we stopped reading early


async def _json_of(p: Provider, resp: aiohttp.ClientResponse) -> dict:
    """A provider's answer read as one JSON object (up to MAX_ANSWER_BYTES), its connection given back."""
    try:
        raw = await _read_up_to(resp, MAX_ANSWER_BYTES)
    except (TimeoutError, aiohttp.ClientError) as exc:
        raise read_failed(p, exc, "reading the answer") from None
    finally:
        _let_go(resp)
    if len(raw) > MAX_ANSWER_BYTES:
        raise too_large(p, f"its body goes on past {MAX_ANSWER_BYTES >> 20} MiB")
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):  # (not JSON; or too deep to read)
        raise bad_answer(p, f"answered with something that is not JSON: {p.scrub(repr(raw[:120]))}") from None
    if not isinstance(data, dict):
        raise bad_answer(p, "answered with JSON that is not an object")
    return data


def _whole(p: Provider, data: dict) -> dict:
    """A whole answer (`data`, JSON), checked: it holds a message, one a message can keep."""
    choices = data.get("choices")
    first = choices[0] if isinstance(choices, list) and choices else None
    if isinstance(first, dict) and isinstance(first.get("message"), dict):
        text = first["message"].get("content")
        if isinstance(text, str) and len(text) > MAX_TEXT:
            raise text_too_large(p)
        return data
    if "error" in data and not choices:  # a failure sent with status 200 (some proxies do)
        said = p.scrub(provider_message(json.dumps(data).encode()))
        raise provider_error(
            "provider_failed",
            502,
            f"provider {p.name!r} answered with an error instead of an answer (HTTP 200: {said}); retry later",
            provider=p.name,
            provider_status=200,
        )
    raise bad_answer(
        p,
        "answered with no message in it (an answer is "
        f'{{"choices": [{{"message": {{...}}}}]}}): {p.scrub(repr(json.dumps(data)[:120]))}',
    )


def as_chunk(data: dict) -> dict:
    """A whole answer (checked: `_whole`) as the one chunk of a stream: its message as the delta, each of its
    tool calls given its index, its usage."""
    choice = data["choices"][0]
    delta = {k: v for k, v in choice["message"].items() if k != "tool_calls"}
    calls = choice["message"].get("tool_calls")
    if isinstance(calls, list) and calls:
        delta["tool_calls"] = [{**c, "index": i} if isinstance(c, dict) else c for i, c in enumerate(calls)]
    chunk = {k: data[k] for k in ("id", "created", "model", "system_fingerprint") if k in data}
    chunk["object"] = "chat.completion.chunk"
    chunk["choices"] = [{"index": 0, "delta": delta, "finish_reason": choice.get("finish_reason")}]
    if "usage" in data:
        chunk["usage"] = data["usage"]
    return chunk


async def put_together(p: Provider, chunks: AsyncGenerator[tuple[bytes, dict], None]) -> dict:
    """A stream's chunks put together into the whole answer a request asked whole is answered with (as_chunk's
    reverse): its first choice's deltas into one message (their texts joined, their tool calls assembled), its
    finish reason, its usage; the answer's id, model and date as its first chunk gives them."""
    head: dict | None = None
    message: dict = {"role": "assistant"}
    texts: dict[str, list[str]] = {}
    calls = Assembled()
    finish = usage = None
    size = 0
    async with aclosing(chunks) as events:
        async for raw, chunk in events:
            size += len(raw)
            if size > MAX_ANSWER_BYTES:
                raise too_large(p, f"its stream goes on past {MAX_ANSWER_BYTES >> 20} MiB")
            head = head or chunk
            usage = chunk.get("usage") or usage
            choice = first_choice(chunk)
            delta = choice.get("delta") if choice is not None else None
            if choice is None or not isinstance(delta, dict):
                continue
            finish = choice.get("finish_reason") or finish
            calls.add(chunk)
            for k, x in delta.items():
                if isinstance(x, str) and k != "role":
                    texts.setdefault(k, []).append(x)
                elif k not in ("role", "tool_calls") and x is not None:
                    message[k] = x
    if head is None:
        raise bad_answer(p, "answered with a stream of no chunk: no answer in it")
    message.update({k: "".join(v) for k, v in texts.items()})
    if whole_calls := calls.whole():
        message["tool_calls"] = whole_calls
    message.setdefault("content", None if whole_calls else "")
    data = {k: head[k] for k in ("id", "created", "model", "system_fingerprint") if k in head}
    data["object"] = "chat.completion"
    data["choices"] = [{"index": 0, "message": message, "finish_reason": finish}]
    if usage is not None:
        data["usage"] = usage
    return data


async def _read_up_to(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    """The response's body, read until its end or until it goes past `limit` bytes (then it is longer)."""
    parts: list[bytes] = []
    n = 0
    while n <= limit:
        got = await resp.content.read(limit + 1 - n)
        if not got:
            break
        parts.append(got)
        n += len(got)
    return b"".join(parts)


def _let_go(resp: aiohttp.ClientResponse) -> None:
    """A response read to its end gives its connection back; one that was not (too large, cut) is dropped with
    its connection, which stops the provider's generation."""
    if resp.content.at_eof():
        resp.release()
    else:
        resp.close()


def finish_reason(chunk: dict) -> str | None:
    choices = chunk.get("choices")
    if choices and isinstance(choices, list) and isinstance(choices[0], dict):
        return choices[0].get("finish_reason")
    return None


def usage_of(data: dict) -> dict | None:
    """{prompt_tokens, completion_tokens} from a provider's usage object, if it sent one; a count that is no
    whole number from 0 to MAX_TOKENS is not taken (kept, no other device would take this one's log). Its
    completion_tokens as OpenAI counts them: a reasoning model's hidden tokens within, where the provider counted
    them beside (xAI's: `_reasoning`), so that the quota's count (storage/model.py charge, CHARGE_SUM_SQL, the same
    on every version) charges what was billed, whichever provider answered."""
    u = data.get("usage")
    if not isinstance(u, dict):
        return None
    out = {k: u[k] for k in ("prompt_tokens", "completion_tokens") if type(u.get(k)) is int and 0 <= u[k] <= MAX_TOKENS}
    n, beside = _reasoning(u)
    if beside and n is not None:
        out["completion_tokens"] = u["completion_tokens"] + n
    return out or None


def reasoning_of(data: dict) -> int | None:
    """The tokens of a reasoning model's hidden thinking within the completion_tokens usage_of gives (OpenAI's
    `completion_tokens_details.reasoning_tokens`), if it says so: billed, but no part of the answer it shows.
    None when they are not: not a whole number from 1 to MAX_TOKENS, or more than completion_tokens where they are
    counted within."""
    u = data.get("usage")
    n, beside = _reasoning(u) if isinstance(u, dict) else (None, False)
    completion = u.get("completion_tokens") if isinstance(u, dict) else None
    if n is None or type(completion) is not int or not (beside or n <= completion):
        return None
    return n


def _reasoning(u: dict) -> tuple[int | None, bool]:
    """The reasoning tokens a usage object says apart, if any, and whether they are counted beside its
    completion_tokens, not within them (OpenAI's): its total_tokens adds the three (xAI's), which a total of
    OpenAI's, the prompt's and the completion's, never does."""
    details = u.get("completion_tokens_details")
    n = details.get("reasoning_tokens") if isinstance(details, dict) else None
    if not (type(n) is int and 0 < n <= MAX_TOKENS):
        return None, False
    completion, prompt, total = u.get("completion_tokens"), u.get("prompt_tokens"), u.get("total_tokens")
    if not (isinstance(completion, int) and isinstance(prompt, int) and isinstance(total, int)):
        return n, False
    return n, all(type(x) is int for x in (completion, prompt, total)) and (  # (not `true`: a bool is an int)
        0 <= completion <= MAX_TOKENS - n and total >= prompt + completion + n
    )
