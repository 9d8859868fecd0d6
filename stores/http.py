"""One HTTP client for the network stores: a shared aiohttp session, timeouts, the classification of
every failure into the classes of stores/errors.py, and retries (429/503 after the server's
Retry-After, other 5xx but 507 (no room: StoreFull), answers cut short of their Content-Length or not
valid HTTP (more bytes than it announced),
timeouts (ours, or the server's 408) and refused connections with jittered exponential backoff).

Secrets (tokens, passwords) go only into request headers. The client knows them (`secret()`) and
scrubs them from every message it builds, in case a server echoes them back; nothing here logs a
header, and the client's repr shows only the base URL.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import email.utils
import errno
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import yarl
from aiohttp.http_exceptions import HttpProcessingError

from ..storage.clock import wait_said, wall
from ..storage.redact import hide_everywhere, scrub_text, shown_url, url_secrets
from .base import DEFAULT_MAX_REQUESTS_PER_SECOND, StoreError
from .bounded import UNDER_WAY, Arriving, timed_out
from .errors import (
    RELAY_INVITE,
    RELAY_REVOKED,
    AccountRevoked,
    AuthRefused,
    NoRelayAccount,
    ObjectTooLarge,
    PlainHttpThere,
    RateLimited,
    ServerError,
    ShortAnswer,
    StoreFull,
    StoreRedirected,
    StoreTimeout,
    StoreUnreachable,
    TlsRefused,
    connect_cause,
    server_wait,
)

# the redirects HttpClient follows (where safe: _followed), and how many in a row
REDIRECTS = (301, 302, 303, 307, 308)
MAX_REDIRECTS = 5

# a connection the server broke under a request (a server stopping resets its open ones): the store
# unreachable for now, as a disconnection is, not a refusal
BROKEN = (errno.ECONNRESET, errno.ECONNABORTED, errno.EPIPE)


@dataclass
class Reply:
    status: int
    headers: Any
    body: bytes

    def json(self) -> Any:
        import json

        try:
            return json.loads(self.body)
        except (ValueError, RecursionError):  # RecursionError: nested deeper than the parser goes
            raise ServerError(f"the server answered HTTP {self.status} with a body that is not JSON") from None


def file_form(
    data: bytes, filename: str, content_type: str = "application/octet-stream"
) -> Callable[[], aiohttp.FormData]:
    """A multipart body of one `file` field holding `data` (an upload to a portal or node), as the
    `body` of HttpClient.request: made afresh for each try, since a FormData is spent once sent."""

    def form() -> aiohttp.FormData:
        f = aiohttp.FormData()
        f.add_field("file", data, filename=filename, content_type=content_type)
        return f

    return form


@dataclass
class RetryPolicy:
    attempts: int = 4  # tries in all, for a retryable failure
    backoff: float = 0.25  # first backoff (s); doubled each retry, then jittered down to half
    max_backoff: float = 8.0
    max_retry_after: float = 30.0  # a Retry-After longer than this is not waited for: RateLimited at once


def retry_after_seconds(value: str | None, date: str | None = None) -> float | None:
    """Retry-After as seconds: delta-seconds or an HTTP date (RFC 9110 §10.2.3); None if absent/invalid.
    An HTTP date is a time on the server's clock: it is judged against the answer's own Date (`date`, RFC
    9110 §6.6.1, the time the server made the answer), as a cache judges Expires (RFC 9111 §4.2.1), so that
    a device whose clock is off waits what the server asked (a device 10 minutes behind would otherwise wait
    10 minutes more); by this device's clock only when the answer has no usable Date."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # (str.isdigit alone takes '²', which float() refuses)
        return float(value)
    when = _http_date(value)
    if when is None:
        return None
    sent = _http_date(date)
    return max(0.0, when - (sent if sent is not None else wall()))


def _http_date(value: str | None) -> float | None:
    """An HTTP date as seconds since the epoch (one without a zone, '-0000', taken as GMT, which every HTTP
    date is: RFC 9110 §5.6.7); None if absent or malformed."""
    if not value:
        return None
    try:
        when = email.utils.parsedate_to_datetime(value.strip())
    except (TypeError, ValueError):
        return None
    return (when if when.tzinfo is not None else when.replace(tzinfo=dt.UTC)).timestamp()


class RateCap:
    """A token bucket: at most `rate` requests a second on average, `burst` at once (default: one
    second's worth). `acquire()` waits for a token; waiters are served in order, each at its own slot,
    so many concurrent callers are spread out instead of released together."""

    def __init__(self, rate: float | None, burst: float | None = None):
        if rate is not None and rate <= 0:
            raise ValueError("max_requests_per_second must be positive (or None for no cap)")
        self.rate = rate
        self.burst = max(1.0, burst if burst is not None else (rate or 1.0))
        self._tokens = self.burst
        self._stamp = time.monotonic()
        self.waited = 0.0  # seconds spent waiting for the cap, in all (for status and tests)

    async def acquire(self) -> None:
        if self.rate is None:
            return
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        self._tokens -= 1.0  # reserve our token now: the next caller queues behind us
        if self._tokens < 0:
            wait = -self._tokens / self.rate
            self.waited += wait
            await asyncio.sleep(wait)


class HttpClient:
    """Requests to one server (`base`, e.g. http://127.0.0.1:5001). Not thread-safe: one event loop.

    `max_requests_per_second` caps the requests sent with `capped=True`: the ones a follower repeats
    on every poll (head reads), whose number grows with the sessions it follows. Object transfers are
    not capped: they are work proportional to what changed, bounded by the callers' concurrency."""

    def __init__(
        self,
        base: str,
        *,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        max_body: int = 4 << 20,
        max_requests_per_second: float | None = DEFAULT_MAX_REQUESTS_PER_SECOND,
    ):
        self.base = base.rstrip("/")
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self.max_body = max_body
        self.cap = RateCap(max_requests_per_second)
        self._session: aiohttp.ClientSession | None = None
        self._secrets: list[str] = url_secrets(self.base)  # a password or token in the URL itself
        hide_everywhere(*self._secrets)
        # the server's clock as of its last answer: (its Date header, this machine's time on receipt)
        self.last_date: tuple[float, float] | None = None
        # monotonic time before which no request is sent: the server's Retry-After that a request gave
        # up on (RFC 9110: the wait is the client's, not one request's), so that every caller (a
        # follower's head reads, the change feed, doctor) leaves the server alone, not only the pushes
        self.not_before = 0.0

    def __repr__(self) -> str:
        return f"<HttpClient {shown_url(self.base)}>"

    def fail_rate_limits_at_once(self) -> None:
        """A Retry-After (of more than 0 s) is no longer waited for inside a request: RateLimited at once, the
        wait held for every request (Store.fail_rate_limits_at_once)."""
        self.retry = dataclasses.replace(self.retry, max_retry_after=0.0)

    def secret(self, value: str) -> str:
        """Remember `value` as a secret (scrubbed from every message, this client's pieces of it too, and from
        every other text of this process by its value: storage/redact.py's hide_everywhere); returns it."""
        if value and value not in self._secrets:
            self._secrets.append(value)
            hide_everywhere(value)
        return value

    def scrub(self, text: str) -> str:
        return scrub_text(text, self._secrets)

    def _session_for_loop(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=self.timeout, sock_read=self.timeout),
                connector=aiohttp.TCPConnector(limit=16),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None

    def _what(self, method: str, path: str) -> str:
        return f"{method} {shown_url(self.base + path)}"

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: dict | None = None,
        headers: dict | None = None,
        body: Callable[[], Any] | None = None,
        json: Any = None,
        ok: tuple[int, ...] = (200,),
        passthrough: tuple[int, ...] = (),
        final: Callable[[Reply], bool] | None = None,
        retry: bool = True,
        max_body: int | None = None,
        capped: bool = False,
    ) -> Reply:
        """Send one request, retrying what is worth retrying. Returns the reply when its status is in
        `ok` or `passthrough` (the caller interprets those, e.g. 404); raises a classified StoreError
        otherwise. `body` is a function making the request body (a FormData cannot be sent twice).
        `final(reply)` may say that a 5xx is an answer, not a failure (Kubo answers every error 500).
        `capped`: every attempt waits for the request-rate cap first (a retry is a request too). A redirect is
        followed for a read only (GET, HEAD), and only within this server when the request carries credentials
        (_followed): anything else redirected is a StoreRedirected."""
        attempts = self.retry.attempts if retry else 1
        what = self._what(method, path)
        left = self.not_before - time.monotonic()
        if left > 0:
            raise RateLimited(
                f"{what}: not sent, the server asked us to wait (Retry-After); {wait_said(left)} left of its wait", left
            )
        last: StoreError | None = None
        for attempt in range(attempts):
            delay: float | None = None
            if capped:
                await self.cap.acquire()
            arriving = Arriving()
            try:
                reply = await self._followed(
                    method,
                    path,
                    params=params,
                    headers=headers,
                    data=body() if body else None,
                    json=json,
                    max_body=max_body or self.max_body,
                    arriving=arriving,
                )
            except ShortAnswer as exc:  # reached, answered, the answer cut short: retried as a 5xx is
                last = exc
            except (aiohttp.ClientResponseError, HttpProcessingError):
                last = self._not_http(what)  # reached, and its answer unusable: retried as a 5xx is
            except TimeoutError:
                last = timed_out(what, arriving, self.timeout)
            except aiohttp.ClientSSLError as exc:  # before ClientConnectorError, its base: not a store down
                raise await self._tls_refused(what, exc) from None
            except aiohttp.ClientConnectorError as exc:
                last = StoreUnreachable(
                    f"{what}: cannot connect ({self.scrub(connect_cause(exc.os_error or exc))}); "
                    "is the server running and the URL right?"
                )
            except (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError, ConnectionResetError) as exc:
                last = StoreUnreachable(f"{what}: the connection broke ({type(exc).__name__})")
            except aiohttp.ClientOSError as exc:
                if exc.errno not in BROKEN:  # (a server stopping resets its open connections: ECONNRESET)
                    raise StoreError(f"{what}: {self.scrub(str(exc))}") from None
                last = StoreUnreachable(f"{what}: the connection broke ({errno.errorcode[exc.errno]})")
            except aiohttp.ClientError as exc:
                raise StoreError(f"{what}: {self.scrub(str(exc))}") from None
            else:
                if reply.status in ok or reply.status in passthrough:
                    return reply
                if final is not None and final(reply):
                    return reply
                text = self.scrub(reply.body[:300].decode("utf-8", "replace")).strip()
                detail = f"HTTP {reply.status}" + (f": {text}" if text else "")
                if reply.status in (401, 403):
                    refused = (
                        AccountRevoked
                        if RELAY_REVOKED in text
                        else NoRelayAccount
                        if RELAY_INVITE in text
                        else AuthRefused
                    )
                    raise refused(f"{what}: the server refused our credentials ({detail})")
                if reply.status == 413:
                    raise ObjectTooLarge(f"{what}: the server says the object is too large ({detail})")
                if reply.status == 507:  # Insufficient Storage: a quota used up (the relay's), a full disk
                    raise StoreFull(f"{what}: the server has no room left for it ({detail})")
                if reply.status in (429, 503):
                    wait = retry_after_seconds(reply.headers.get("Retry-After"), reply.headers.get("Date"))
                    last = RateLimited(
                        f"{what}: the server asks us to slow down ({detail})"
                        + (f"; retry after {wait_said(wait)}" if wait is not None else ""),
                        wait,
                    )
                    if wait is not None:
                        if wait > self.retry.max_retry_after:
                            raise self._left_alone(last)
                        delay = max(wait, self._backoff(attempt))  # (a Retry-After: 0 is no hot loop)
                elif reply.status == 408:  # the server (or a proxy) did not get the whole request in time
                    last = StoreTimeout(f"{what}: the server did not receive the request in time ({detail})")
                elif reply.status >= 500:
                    last = ServerError(f"{what}: server error ({detail})", reply.status)
                else:
                    raise StoreError(f"{what}: the server refused the request ({detail})")
            if attempt + 1 < attempts:
                await asyncio.sleep(self._backoff(attempt) if delay is None else delay)
        assert last is not None
        raise self._left_alone(last)

    def _backoff(self, attempt: int) -> float:
        """The wait before try `attempt` + 2: doubled each try up to max_backoff, jittered down to half of it, so
        that the retries of many clients spread out."""
        cap = min(self.retry.max_backoff, self.retry.backoff * (2**attempt))
        return random.uniform(cap / 2, cap)

    @staticmethod
    def _not_http(what: str) -> ServerError:
        """The server's answer could not be parsed as HTTP (aiohttp's parser refused it: a ClientResponseError
        with no status of the server's own). Its words are left out: they quote the bytes that failed to parse,
        the body of an object among them."""
        return ServerError(
            f"{what}: the server's answer is not valid HTTP: it sent more than its Content-Length announced, or"
            " something other than an HTTP server answers at that address (a server or a proxy in front of it"
            " counting its answers wrong)"
        )

    async def _tls_refused(self, what: str, exc: aiohttp.ClientSSLError) -> TlsRefused:
        """The TLS handshake failed: the certificate is not trusted here, or no TLS answers on the port (a
        server answering plain HTTP there is told apart: _plain_http). Not retried: the next try meets the same
        certificate."""
        said = self.scrub(str(getattr(exc, "certificate_error", None) or exc.os_error or exc))
        if isinstance(exc, aiohttp.ClientConnectorCertificateError):
            return TlsRefused(
                f"{what}: the server's TLS certificate is not trusted by this device ({said}); a certificate of"
                " its own (sessiond serve --cert) is trusted by starting the daemon with SSL_CERT_FILE=that file"
            )
        where = yarl.URL(self.base)
        if await self._plain_http(where):
            return PlainHttpThere(
                f"{what}: the server at {where.host}:{where.port} answers plain HTTP, not HTTPS: there is no TLS"
                " on that port"
            )
        return TlsRefused(f"{what}: no secure connection (TLS) could be made ({said}); does it serve HTTPS there?")

    async def _plain_http(self, where: yarl.URL) -> bool:
        """Whether what answers at `where`'s host and port is a plain HTTP server: one HEAD / of HTTP/1.0 in the
        clear (no path, no header of ours: nothing of a request to the store), its answer's first bytes read."""
        if where.scheme != "https" or not where.host:
            return False
        try:
            async with asyncio.timeout(min(self.timeout, 5.0)):
                reader, writer = await asyncio.open_connection(where.host, where.port)
                try:
                    writer.write(b"HEAD / HTTP/1.0\r\n\r\n")
                    await writer.drain()
                    first = await reader.read(5)
                finally:
                    writer.close()
        except (OSError, TimeoutError):
            return False
        return first == b"HTTP/"

    def _left_alone(self, exc: StoreError) -> StoreError:
        """`exc`, the request's failure; a Retry-After in it (capped) holds every request until it is over."""
        wait = server_wait(exc)
        if wait is not None:
            self.not_before = max(self.not_before, time.monotonic() + wait)
        return exc

    async def _followed(
        self, method: str, path: str, *, params, headers, data, json, max_body: int, arriving: Arriving
    ) -> Reply:
        """The answer to one request, its redirects followed where that is safe: a read's (GET, HEAD: nothing
        is sent but the request, and what comes back is verified by its hash or signature), within this
        server's origin, or anywhere when it carries no credentials (a public gateway's path redirected to its
        subdomain); never a write's (its body is for this store), nor a request with this store's credentials
        to another server (aiohttp would send it there without them, and its refusal would be said as this
        store's). A redirect not followed, or more than MAX_REDIRECTS of them, is a StoreRedirected naming
        where it points. The timeout bounds the try, all its hops: not each hop (up to MAX_REDIRECTS + 1 times
        store_timeout for one try)."""
        under, entry = UNDER_WAY.get(), (self._what(method, path), arriving)
        if under is not None:
            under.append(entry)
        cancelled = False
        try:
            async with asyncio.timeout(self.timeout):
                sent = {"params": params, "headers": headers, "data": data, "json": json, "max_body": max_body}
                return await self._hops(method, path, entry[0], arriving, sent)
        except asyncio.CancelledError:
            cancelled = True  # (a caller's bound fired, stores/bounded.py: what arrived is its to read)
            raise
        finally:
            if under is not None and not cancelled:
                under[:] = [e for e in under if e is not entry]

    async def _hops(self, method: str, path: str, what: str, arriving: Arriving, sent: dict[str, Any]) -> Reply:
        """_followed's hops: `sent`, _once's keywords (its params dropped after a redirect: the target has its own)."""
        url, headers = self.base + path, sent["headers"]
        for _ in range(MAX_REDIRECTS + 1):
            reply = await self._once(method, url, what, arriving=arriving, **sent)
            location = reply.headers.get("Location") if reply.status in REDIRECTS else None
            if not location:
                return reply  # (a 3xx with nowhere to go is the server's refusal: request() says it so)
            try:
                target = yarl.URL(url).join(yarl.URL(location))
            except ValueError:
                target = None
            shown = self.scrub(shown_url(str(target) if target is not None else location))
            moved = f"{what}: the server redirects it (HTTP {reply.status}) to {shown}"
            if target is None or target.scheme not in ("http", "https"):
                raise StoreRedirected(f"{moved}, which is no HTTP address")
            if method not in ("GET", "HEAD"):
                raise StoreRedirected(f"{moved}; a write to a store is not sent elsewhere")
            own = target.origin() == yarl.URL(self.base).origin()
            if not own and any(k.lower() == "authorization" for k in headers or {}):
                raise StoreRedirected(f"{moved}, another server; this store's credentials are not sent there")
            url, sent = str(target), {**sent, "params": None}
        raise StoreRedirected(f"{what}: the server redirects it round and round (more than {MAX_REDIRECTS} redirects)")

    async def _once(
        self, method: str, url: str, what: str, *, params, headers, data, json, max_body: int, arriving: Arriving
    ) -> Reply:
        session = self._session_for_loop()
        arriving.status = arriving.promised = None  # (this hop's answer: not a redirect's before it)
        arriving.size = 0
        async with session.request(
            method, url, params=params, headers=headers, data=data, json=json, allow_redirects=False
        ) as resp:
            arriving.status, arriving.promised, arriving.size = resp.status, resp.content_length, 0
            chunks, size = [], 0
            while True:
                try:
                    chunk = await resp.content.read(1 << 16)
                except aiohttp.ClientPayloadError:
                    raise self._short(what, resp, size) from None
                if not chunk:
                    break
                size += len(chunk)
                arriving.size = size
                if size > max_body:
                    raise ServerError(f"{what}: the answer is larger than {max_body} bytes", resp.status)
                chunks.append(chunk)
            self._note_date(resp.headers.get("Date"))
            return Reply(resp.status, resp.headers, b"".join(chunks))

    def _short(self, what: str, resp: aiohttp.ClientResponse, size: int) -> ShortAnswer:
        """The answer broke off after `size` bytes (as read: decoded, if the server compressed it)."""
        promised = resp.content_length
        if promised is not None and not resp.headers.get("Content-Encoding"):
            said = f"the store sent {size} of {promised} bytes it promised (Content-Length), then closed the connection"
        else:
            said = f"the answer broke off after {size} bytes, the connection closed on the rest"
        return ShortAnswer(f"{what}: {said}", resp.status)

    def _note_date(self, value: str | None) -> None:
        """Keep the server's time from its Date header (RFC 9110: one-second resolution), for `doctor`'s
        clock-skew check; a missing or malformed header leaves the last one."""
        if not value:
            return
        when = _http_date(value)
        if when is not None:
            self.last_date = (when, wall())
