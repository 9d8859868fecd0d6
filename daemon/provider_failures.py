"""What a provider's failure is called (issue 16): its HTTP status and body, or the connection's failure,
made into a `ProviderError` whose code and status each caller answers with, and whose message says what to
check: unreachable, unauthorized (401/403), model not found (404), rate limited (429, with the provider's
Retry-After), the account's quota spent (429 insufficient_quota), the provider's own failure (5xx), a timeout,
a stream cut before its end, an answer too large to keep. What the provider wrote is scrubbed of its key before
it is shown."""

from __future__ import annotations

import json
import math

import aiohttp
from aiohttp.http_exceptions import ContentLengthError, HttpProcessingError, TransferEncodingError

from ..api.types import MAX_TEXT
from ..storage.clock import wait_said
from ..storage.redact import shown_url
from ..stores.errors import connect_cause
from ..stores.http import retry_after_seconds
from .provider_config import Provider, ProviderError, provider_error

# What is read of a provider's whole answer (or its error's body), at most: an answer of MAX_TEXT characters
# each written as JSON's longest escape (a surrogate pair, 12 bytes), and 1 MiB for the rest of it. Past it the
# reading stops: a provider that never ends its answer does not grow the daemon without bound.
MAX_ANSWER_BYTES = 12 * MAX_TEXT + (1 << 20)


def _retry_after(value: str | None, date: str | None) -> float | None:
    """A 429's Retry-After in seconds: a number of seconds or an HTTP date (RFC 9110 10.2.3; judged against
    the answer's Date, `date`: the provider's clock, not this device's); None for anything else (inf, nan, a
    word), as if the provider had not said."""
    if value is None:
        return None
    try:
        after = float(value)
    except ValueError:
        return retry_after_seconds(value, date)
    return max(0.0, after) if math.isfinite(after) else None


def provider_message(raw: bytes) -> str:
    """The provider's own error message, if its body says one (OpenAI shape or plain text), shortened."""
    try:
        data = json.loads(raw)
        err = data.get("error") if isinstance(data, dict) else None
        msg = err.get("message") if isinstance(err, dict) else err if isinstance(err, str) else None
        if msg:
            return str(msg)[:300]
    except (ValueError, RecursionError):  # (not JSON; or too deep to read)
        pass
    return raw.decode("utf-8", "replace").strip()[:300]


def _provider_code(raw: bytes) -> str | None:
    """The provider's own error code, if its body (OpenAI's error shape) gives one."""
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):  # (not JSON; or too deep to read)
        return None
    err = data.get("error") if isinstance(data, dict) else None
    code = err.get("code") if isinstance(err, dict) else None
    return code if isinstance(code, str) and 0 < len(code) <= 100 and code.isprintable() else None


def classify(
    p: Provider, status: int, raw: bytes, headers, model: str | None, path: str = "/chat/completions"
) -> ProviderError:
    said = p.scrub(provider_message(raw))
    tail = f": {said}" if said else ""
    if status == 404 and "model" not in said.lower():
        # not a word about a model: most likely a path the server does not have (a base_url without its
        # /v1); the code stays the provider's 404, the words say where to look
        return provider_error(
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
        return provider_error(
            "provider_unauthorized",
            502,
            f"provider {p.name!r} refused sessiond's key (HTTP {status}{tail}); "
            f"check api_key_file / api_key_env of [providers.{p.name}] in config.toml",
            provider=p.name,
            provider_status=status,
        )
    if status == 404:
        return provider_error(
            "model_not_found",
            404,
            f"provider {p.name!r} has no model {model!r} (HTTP 404{tail}); "
            # an app's words (the socket API and the OpenAI endpoint alike); `sessiond ask` gives its own
            f"choose another in the request's `model` field (the provider's models: GET /openai/v1/models)",
            provider=p.name,
            model=model,
            provider_status=status,
        )
    if status == 429 and _provider_code(raw) == "insufficient_quota":
        # OpenAI's (and its imitators') account out of credit: no wait mends it, unlike a rate limit
        return provider_error(
            "provider_quota_exceeded",
            429,
            f"provider {p.name!r} says the account of sessiond's key is out of quota (HTTP 429{tail}); a retry "
            f"does not mend it: check that account's plan and billing, or the key in api_key_file / api_key_env "
            f"of [providers.{p.name}] in config.toml",
            provider=p.name,
            provider_status=status,
            provider_code="insufficient_quota",
        )
    if status == 429:
        after = _retry_after(headers.get("Retry-After"), headers.get("Date"))
        return provider_error(
            "provider_rate_limited",
            429,
            f"provider {p.name!r} is rate limiting (HTTP 429{tail})"
            + (f"; retry after {wait_said(after)}" if after is not None else "; retry later"),
            provider=p.name,
            provider_status=status,
            retry_after=after,
        )
    if status >= 500:  # a 503 may say when to come back (RFC 9110 10.2.3), as a 429 does
        after = _retry_after(headers.get("Retry-After"), headers.get("Date"))
        return provider_error(
            "provider_failed",
            502,
            f"provider {p.name!r} failed (HTTP {status}{tail}); "
            + (f"retry after {wait_said(after)}" if after is not None else "retry later"),
            provider=p.name,
            provider_status=status,
            **({"retry_after": after} if after is not None else {}),
        )
    code = _provider_code(raw)  # e.g. OpenAI's context_length_exceeded, which apps act on
    return provider_error(
        "provider_rejected",
        422,
        f"provider {p.name!r} refused the request (HTTP {status}{tail})",
        provider=p.name,
        provider_status=status,
        **({"provider_code": code} if code else {}),
    )


def connection_failed(exc: BaseException) -> str:
    """Why no connection to a provider was made, worded as a store's is (stores/http.py): "cannot connect
    (Connection refused)", a TLS handshake failing said as such; not aiohttp's "Cannot connect to host
    127.0.0.1:9 ssl:default [...]", whose "ssl:default" of a plain http:// URL reads as a TLS problem."""
    if isinstance(exc, aiohttp.ClientSSLError):  # (before ClientConnectorError, its base)
        said = getattr(exc, "certificate_error", None) or exc.os_error
        return f"no secure connection (TLS) could be made ({said or type(exc).__name__})"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect ({connect_cause(exc.os_error)})"
    if isinstance(exc, OSError) and not isinstance(exc, aiohttp.ClientError):
        return f"cannot connect ({connect_cause(exc)})"
    return str(exc) or type(exc).__name__


def unreachable(p: Provider, exc: BaseException) -> ProviderError:
    return provider_error(
        "provider_unreachable",
        502,
        f"provider {p.name!r} at {shown_url(p.base_url)} cannot be reached: {p.scrub(connection_failed(exc))}; "
        f"is it running? (base_url in [providers.{p.name}] of config.toml)",
        provider=p.name,
    )


def timed_out(p: Provider, what: str) -> ProviderError:
    return provider_error(
        "provider_timeout",
        504,
        f"provider {p.name!r} sent nothing for {p.timeout:g} s ({what}); "
        f"raise timeout in [providers.{p.name}] if the model is slow",
        provider=p.name,
    )


def stream_cut(p: Provider, why: str) -> ProviderError:
    return provider_error(
        "provider_stream_cut",
        502,
        f"provider {p.name!r} cut the answer off before its end ({p.scrub(why)})",
        provider=p.name,
    )


def read_failed(p: Provider, exc: BaseException, when: str) -> ProviderError:
    """A read of the provider's answer that failed (`exc`: a timeout, or aiohttp's ClientError) `when`:
    silence past the provider's timeout, or the answer cut off."""
    if isinstance(exc, TimeoutError):
        return timed_out(p, when)
    return stream_cut(p, _cut_said(exc))


def _cut_said(exc: BaseException) -> str:
    """What broke a read of the provider's answer, said as sessiond says it: aiohttp's ClientPayloadError
    prints its cause as "<TransferEncodingError: 400, message='...'>", whose 400 (aiohttp's code for a
    malformed message) reads as the provider's HTTP status. Its cause's own text is kept: how much came."""
    cause = exc.__cause__
    said = cause.message.strip().rstrip(".") if isinstance(cause, HttpProcessingError) else ""
    said = said[:1].lower() + said[1:]
    if isinstance(cause, (ContentLengthError, TransferEncodingError)):  # the body ended before its length
        return "its connection closed" + (f": {said}" if said else "")
    return said or str(exc) or type(exc).__name__


def bad_answer(p: Provider, what: str) -> ProviderError:
    """An answer that is no answer (not JSON, not an object, no message): `what` the provider sent."""
    return provider_error("provider_bad_answer", 502, f"provider {p.name!r} {what}", provider=p.name)


def too_large(p: Provider, what: str) -> ProviderError:
    """An answer past what sessiond keeps (`what`: how): its reading stopped, and with it the generation."""
    return provider_error(
        "provider_answer_too_large",
        502,
        f"provider {p.name!r} sent an answer too large to keep ({what}); ask for a shorter one "
        f"(max_tokens), or split the question",
        provider=p.name,
    )


def text_too_large(p: Provider) -> ProviderError:
    """An answer whose text (or its calls' arguments) is past what one message holds."""
    return too_large(p, f"more than the {MAX_TEXT:,} characters a message holds")
