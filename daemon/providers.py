"""Model providers (issue 16): OpenAI-compatible chat-completions endpoints named in config.toml, and
the client that talks to them (aiohttp; JSON answers and server-sent-event streams).

Every failure is a `ProviderError` with its own code and HTTP status, so each caller can answer in its
own format: unreachable, unauthorized (401/403), model not found (404), rate limited (429, with the
provider's Retry-After), the provider's own failure (5xx), a timeout, and a stream cut before its end.

API keys are read from their file or environment variable when a request needs them, and are never
stored, logged, or put in an error message."""

from __future__ import annotations

import asyncio
import json
import math
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp

from ..storage.errors import SessiondError
from ..storage.redact import scrub_text, shown_url
from ..stores.http import retry_after_seconds
from .streambody import Body, LineTooLong


class NoProvider(SessiondError):
    """No provider of this device's config.toml can answer: none is configured, or the one named (by the
    request, or by the session's settings, which sync from devices configured otherwise) is not here. The
    request is valid; this device is not set up for it."""

    code = "no_provider"
    status = 409


class ProviderError(SessiondError):
    code = "provider_error"
    status = 502


def _error(code: str, status: int, message: str, **details) -> ProviderError:
    err = ProviderError(message, **details)
    err.code, err.status = code, status
    return err


@dataclass(frozen=True)
class Provider:
    name: str
    base_url: str
    api_key_file: str | None = None
    api_key_env: str | None = None
    timeout: float = 120.0  # seconds for a whole JSON answer, or between two chunks of a stream
    connect_timeout: float = 10.0
    top_k: bool = False  # whether the provider takes top_k (OpenAI's own API does not)

    def api_key(self) -> str | None:
        """The key, read now (never kept): from api_key_file, or api_key_env, or none (a local server)."""
        if self.api_key_file:
            try:
                with open(os.path.expanduser(self.api_key_file), encoding="utf-8") as f:
                    key = f.read().strip()
            except OSError as exc:
                raise _error(
                    "provider_key_unreadable",
                    502,
                    f"provider {self.name!r}: cannot read its api_key_file "
                    f"{self.api_key_file} ({exc.strerror}); fix the path in config.toml",
                ) from None
            if not key:
                raise _error(
                    "provider_key_unreadable",
                    502,
                    f"provider {self.name!r}: its api_key_file {self.api_key_file} is empty",
                )
            return key
        if self.api_key_env:
            key = os.environ.get(self.api_key_env, "").strip()
            if not key:
                raise _error(
                    "provider_key_unreadable",
                    502,
                    f"provider {self.name!r}: the environment variable "
                    f"{self.api_key_env} (its api_key_env) is not set in the daemon's environment",
                )
            return key
        return None

    def headers(self) -> dict:
        key = self.api_key()
        return {"Authorization": f"Bearer {key}"} if key else {}

    def scrub(self, text: str) -> str:
        """Text the provider (or its HTTP library) wrote, safe to show and log: a provider may echo the
        key it refused ("Incorrect API key provided: sk-abc..."), whole or in part; that key, any piece
        of it, and anything shaped like a bearer token or an API key are replaced by ***."""
        try:
            key = self.api_key()
        except ProviderError:  # unreadable now: the patterns still apply
            key = None
        return scrub_text(text, [key], tokens=True)


def _retry_after(value: str | None) -> float | None:
    """A 429's Retry-After in seconds: a number of seconds or an HTTP date (RFC 9110 10.2.3); None for
    anything else (inf, nan, a word), as if the provider had not said."""
    if value is None:
        return None
    try:
        after = float(value)
    except ValueError:
        return retry_after_seconds(value)
    return max(0.0, after) if math.isfinite(after) else None


def _provider_message(raw: bytes) -> str:
    """The provider's own error message, if its body says one (OpenAI shape or plain text), shortened."""
    try:
        data = json.loads(raw)
        err = data.get("error") if isinstance(data, dict) else None
        msg = err.get("message") if isinstance(err, dict) else err if isinstance(err, str) else None
        if msg:
            return str(msg)[:300]
    except ValueError:
        pass
    return raw.decode("utf-8", "replace").strip()[:300]


def _provider_code(raw: bytes) -> str | None:
    """The provider's own error code, if its body (OpenAI's error shape) gives one."""
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    err = data.get("error") if isinstance(data, dict) else None
    code = err.get("code") if isinstance(err, dict) else None
    return code if isinstance(code, str) and 0 < len(code) <= 100 and code.isprintable() else None


def classify(
    p: Provider, status: int, raw: bytes, headers, model: str | None, path: str = "/chat/completions"
) -> ProviderError:
    said = p.scrub(_provider_message(raw))
    tail = f": {said}" if said else ""
    if status == 404 and "model" not in said.lower():
        # not a word about a model: most likely a path the server does not have (a base_url without its
        # /v1); the code stays the provider's 404, the words say where to look
        return _error(
            "model_not_found",
            404,
            f"provider {p.name!r} has nothing at {shown_url(p.base_url + path)} (HTTP 404{tail}); "
            f"check base_url in [providers.{p.name}] of config.toml: the part before /chat/completions, "
            f"often ending in /v1" + (f" (or the model {model!r} is not there)" if model else ""),
            provider=p.name,
            model=model,
            provider_status=status,
        )
    if status in (401, 403):
        return _error(
            "provider_unauthorized",
            502,
            f"provider {p.name!r} refused sessiond's key (HTTP {status}{tail}); "
            f"check api_key_file / api_key_env of [providers.{p.name}] in config.toml",
            provider=p.name,
            provider_status=status,
        )
    if status == 404:
        return _error(
            "model_not_found",
            404,
            f"provider {p.name!r} has no model {model!r} (HTTP 404{tail}); "
            f"choose another with --model (its models: GET /openai/v1/models)",
            provider=p.name,
            model=model,
            provider_status=status,
        )
    if status == 429:
        after = _retry_after(headers.get("Retry-After"))
        return _error(
            "provider_rate_limited",
            429,
            f"provider {p.name!r} is rate limiting (HTTP 429{tail})"
            + (f"; retry after {after:g} s" if after is not None else "; retry later"),
            provider=p.name,
            provider_status=status,
            retry_after=after,
        )
    if status >= 500:
        return _error(
            "provider_failed",
            502,
            f"provider {p.name!r} failed (HTTP {status}{tail}); retry later",
            provider=p.name,
            provider_status=status,
        )
    code = _provider_code(raw)  # e.g. OpenAI's context_length_exceeded, which apps act on
    return _error(
        "provider_rejected",
        422,
        f"provider {p.name!r} refused the request (HTTP {status}{tail})",
        provider=p.name,
        provider_status=status,
        **({"provider_code": code} if code else {}),
    )


def unreachable(p: Provider, exc: BaseException) -> ProviderError:
    return _error(
        "provider_unreachable",
        502,
        f"provider {p.name!r} at {shown_url(p.base_url)} cannot be reached "
        f"({p.scrub(str(exc)) or type(exc).__name__}); "
        f"is it running? (base_url in [providers.{p.name}] of config.toml)",
        provider=p.name,
    )


def timed_out(p: Provider, what: str) -> ProviderError:
    return _error(
        "provider_timeout",
        504,
        f"provider {p.name!r} sent nothing for {p.timeout:g} s ({what}); "
        f"raise timeout in [providers.{p.name}] if the model is slow",
        provider=p.name,
    )


def stream_cut(p: Provider, why: str) -> ProviderError:
    return _error(
        "provider_stream_cut",
        502,
        f"provider {p.name!r} cut the answer off before its end ({p.scrub(why)})",
        provider=p.name,
    )


class Providers:
    """The configured providers, and one HTTP client session shared by all requests to them."""

    def __init__(self, tables: dict, default: str | None):
        self.all = {name: Provider(name, **t) for name, t in tables.items()}
        self.default = default
        self._http: aiohttp.ClientSession | None = None
        self._drains: set[asyncio.Task] = set()  # streams' ends read in the background (_keep)

    def get(self, name: str | None) -> Provider:
        if name is None:
            name = self.default
            if name is None:
                raise NoProvider(
                    "no model provider is configured: add a [providers.NAME] table with base_url "
                    "(and default_provider) to config.toml in the daemon's home, then restart it"
                )
        p = self.all.get(name)
        if p is None:
            raise NoProvider(
                f"no provider {name!r} in this device's config.toml (configured: "
                f"{', '.join(sorted(self.all)) or 'none'}); add [providers.{name}] or choose another"
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
        await asyncio.gather(*self._drains, return_exceptions=True)

    async def close(self) -> None:
        for task in list(self._drains):
            task.cancel()
        await self.settled()
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
                raw = await resp.read()
            except (TimeoutError, aiohttp.ClientError):
                raw = b""
            finally:
                resp.release()
            model = body.get("model") if isinstance(body, dict) else None
            raise classify(p, resp.status, raw, resp.headers, model, path)
        return resp

    async def request_json(self, p: Provider, method: str, path: str, body: Any = None) -> dict:
        """One JSON request (a non-streamed completion, the model list)."""
        resp = await self._open(p, method, path, body, False)
        try:
            raw = await resp.read()
        except TimeoutError:
            raise timed_out(p, "reading the answer") from None
        except aiohttp.ClientError as exc:
            raise stream_cut(p, str(exc) or type(exc).__name__) from None
        finally:
            resp.release()
        try:
            data = json.loads(raw)
        except ValueError:
            raise _error(
                "provider_bad_answer",
                502,
                f"provider {p.name!r} answered with something that is not JSON: {p.scrub(repr(raw[:120]))}",
                provider=p.name,
            ) from None
        if not isinstance(data, dict):
            raise _error(
                "provider_bad_answer",
                502,
                f"provider {p.name!r} answered with JSON that is not an object",
                provider=p.name,
            )
        return data

    async def complete(self, p: Provider, body: dict) -> dict:
        body = {k: x for k, x in body.items() if k != "stream_options"}  # only for streams
        data = await self.request_json(p, "POST", "/chat/completions", {**body, "stream": False})
        choices = data.get("choices")
        first = choices[0] if isinstance(choices, list) and choices else None
        if isinstance(first, dict) and isinstance(first.get("message"), dict):
            return data
        if "error" in data and not choices:  # a failure sent with status 200 (some proxies do)
            said = p.scrub(_provider_message(json.dumps(data).encode()))
            raise _error(
                "provider_failed",
                502,
                f"provider {p.name!r} answered with an error instead of an answer (HTTP 200: {said}); retry later",
                provider=p.name,
                provider_status=200,
            )
        raise _error(
            "provider_bad_answer",
            502,
            f"provider {p.name!r} answered with no message in it (an answer is "
            f'{{"choices": [{{"message": {{...}}}}]}}): {p.scrub(repr(json.dumps(data)[:120]))}',
            provider=p.name,
        )

    async def models(self, p: Provider) -> dict:
        return await self.request_json(p, "GET", "/models")

    async def stream(self, p: Provider, body: dict) -> AsyncIterator[tuple[bytes, dict]]:
        """A streamed completion: each chunk as it arrives, as the provider sent it (the event's data, its
        bytes) and parsed (a dict; the OpenAI endpoint passes the bytes on, the text is read from the dict). Ends
        after the provider's `data: [DONE]`; a stream that ends without it raises provider_stream_cut.
        Closing the iterator early closes the connection, which stops the provider's generation."""
        body = {**body, "stream": True}
        opts = dict(body.get("stream_options") or {})
        opts["include_usage"] = True
        body["stream_options"] = opts
        resp = await self._open(p, "POST", "/chat/completions", body, True)
        done = began = False
        reader = Body(resp.content)  # all that arrived is read before a failure of the connection is raised
        try:
            data: list[bytes] = []
            while True:
                try:
                    line = await reader.readline()
                except TimeoutError:
                    raise timed_out(p, "in the middle of the answer") from None
                except aiohttp.ClientError as exc:
                    raise stream_cut(p, str(exc) or type(exc).__name__) from None
                except LineTooLong as exc:
                    raise _error(
                        "provider_bad_answer", 502, f"provider {p.name!r} sent {exc}", provider=p.name
                    ) from None
                if not line:
                    raise stream_cut(p, "the connection closed without [DONE]")
                line = line.rstrip(b"\r\n")
                if line.startswith(b"data:"):
                    data.append(line[5:].lstrip(b" "))
                    continue
                if line or not data:
                    continue  # comments, event names, ids; or a blank line with no event
                payload = b"\n".join(data)
                data = []
                if payload == b"[DONE]":
                    done = True
                    return
                try:
                    chunk = json.loads(payload)
                except ValueError:
                    raise _error(
                        "provider_bad_answer",
                        502,
                        f"provider {p.name!r} sent a stream event that is not JSON: {p.scrub(repr(payload[:120]))}",
                        provider=p.name,
                    ) from None
                if not isinstance(chunk, dict):  # a chunk is an object: anything else is no part of an answer
                    raise _error(
                        "provider_bad_answer",
                        502,
                        f"provider {p.name!r} sent a stream event that is not a JSON object: "
                        f"{p.scrub(repr(payload[:120]))}",
                        provider=p.name,
                    )
                if "error" in chunk and not chunk.get("choices"):
                    if not began:  # no answer yet: the provider failed, as with a 5xx, it cut nothing
                        raise _error(
                            "provider_failed",
                            502,
                            f"provider {p.name!r} answered with an error instead of an answer "
                            f"({p.scrub(_provider_message(payload))}); retry later",
                            provider=p.name,
                        )
                    raise stream_cut(p, _provider_message(payload))
                began = True
                yield payload, chunk
        finally:
            if done:
                self._keep(resp, reader)
            else:
                reader.stop()
                resp.close()  # stops the provider's generation if we stopped reading early

    def _keep(self, resp: aiohttp.ClientResponse, reader: Body) -> None:
        """A stream that ended with [DONE] gives its connection back for the next request: a new TCP
        connection (and the provider's accept) in front of every first token costs more than the answer's
        own bookkeeping. The end of the chunked body may not have arrived with [DONE]; it is read in the
        background (a few bytes), so that the answer's end is not held up by it."""
        if resp.content.at_eof():
            reader.stop()
            resp.release()
            return
        task = asyncio.ensure_future(self._drain(resp, reader))
        self._drains.add(task)
        task.add_done_callback(self._drains.discard)

    @staticmethod
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


def delta_text(chunk: dict) -> str:
    """The text a streamed chunk adds (its first choice's delta.content)."""
    choices = chunk.get("choices")
    if not choices or not isinstance(choices, list) or not isinstance(choices[0], dict):
        return ""
    delta = choices[0].get("delta") or {}
    text = delta.get("content") if isinstance(delta, dict) else None
    return text if isinstance(text, str) else ""


def finish_reason(chunk: dict) -> str | None:
    choices = chunk.get("choices")
    if choices and isinstance(choices, list) and isinstance(choices[0], dict):
        return choices[0].get("finish_reason")
    return None


def usage_of(data: dict) -> dict | None:
    """{prompt_tokens, completion_tokens} from a provider's usage object, if it sent one."""
    u = data.get("usage")
    if not isinstance(u, dict):
        return None
    out = {k: u[k] for k in ("prompt_tokens", "completion_tokens") if type(u.get(k)) is int and u[k] >= 0}
    return out or None
