"""`AsyncClient`: the asyncio client, aiohttp over the daemon's Unix socket (aiohttp is imported on first
use, so that importing the client stays standard library only). The same methods as `Client`
(calls.Api's, run over this client's coroutine `_call`), each returning an awaitable, and typed so for an app's
type checker by aiocalls.AsyncApi (generated from Api); the streams are async iterators."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..api.locate import default_home, resolve_home
from .aiocalls import AsyncApi
from .calls import (
    IDEMPOTENCY_HEADER,
    KEEP_ALIVE_HEADER,
    LAST_EVENT_ID_HEADER,
    call_timeout,
    complete_body,
    key_for,
    locate_socket,
    quote_id,
    retryable,
    stream_idle_limit,
)
from .errors import (
    ApiError,
    ClientError,
    DaemonNotAnswering,
    DaemonNotRunning,
    answer_of,
    keyed,
    lost,
    raise_for,
    writes,
)
from .sentlater import AsyncCompletionStream, AsyncEvents
from .streams import Backoff, SseParser, StreamedAnswer, broken_answer, stream_event

if TYPE_CHECKING:
    from typing import Unpack

    import aiohttp

    from .aioappends import AppendStreams
    from .calls import CallOptions


def _url(path: str):
    """The URL of `path` (written by calls.py: its ids and query already percent-encoded), as it is: yarl would
    otherwise drop a chat named ".." or "." as a dot segment."""
    from yarl import URL

    return URL("http://localhost" + path, encoded=True)


async def _closes_read() -> None:
    """Two turns of the loop: a close the daemon sent on an idle kept-alive connection while the app's loop was
    busy (a restart) is read, and aiohttp no longer offers that connection for a request that cannot be sent
    again (the blocking client checks its connection so: wire.Connection.closed_by_peer)."""
    import asyncio

    for _ in range(2):  # one to poll the socket, one for its protocol to read the end
        await asyncio.sleep(0)


class AsyncClient(AsyncApi):
    """asyncio client (aiohttp over the Unix socket): Client's calls, each awaited (`s = await c.status()`)."""

    def __init__(
        self, home: str | None = None, *, socket: str | None = None, timeout: float = 300.0, append_stream: bool = True
    ):
        """`append_stream`: as Client's."""
        self.home = resolve_home(home)
        self.socket = locate_socket(self.home, socket)
        self.timeout = timeout
        self._home_hint = None if self.home == default_home() else self.home  # for DaemonNotRunning
        self._session: aiohttp.ClientSession | None = None
        self._ws_session: aiohttp.ClientSession | None = None  # the append streams' (_ws_http)
        self._events_session: aiohttp.ClientSession | None = None  # the change streams' (_events_http)
        self._idle_limit: float | None = None  # what the last stream's handshake said of its idle limit
        self._refusal: bytes | None = None  # the body of the last stream's handshake the daemon refused
        self._appends: AppendStreams | None = None  # the append streams (GET /v1/appends), once one is used
        self._no_stream = not append_stream  # or the daemon has none (older): appends are POSTs
        self._appended = False  # an append was made: the next opens a stream (the first is a POST)
        self._pipeline = True  # streams opened with ?pipeline=1; False for a daemon of before it (it refuses it)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    @property
    def _streams(self) -> list:
        """The append streams open."""
        return [] if self._appends is None else self._appends.pipes

    async def close(self) -> None:
        """Close its connections; calls still on their way raise ClientError, an append's (on its stream or a
        POST) with done_unknown and its idempotency_key (sent again with it, it is done once), and events()
        iterations end (not resumed); a call after close() opens new connections."""
        self._closings += 1
        # each let go before it is closed: a call made meanwhile opens a new one, not one being closed
        if self._appends is not None:
            appends, self._appends = self._appends, None  # the next append, if any, opens streams anew
            await appends.close()
        if self._ws_session is not None:
            ws, self._ws_session = self._ws_session, None
            await ws.close()  # (not the connector: the calls' session owns it)
        if self._events_session is not None:
            events, self._events_session = self._events_session, None
            await events.close()  # (nor here)
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    def _http(self):
        import aiohttp

        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.UnixConnector(path=self.socket), timeout=aiohttp.ClientTimeout(total=self.timeout)
            )
        return self._session

    def _ws_http(self):
        """The append streams' session: the calls' connector (its connections and their limit, shared), and a
        trace that reads the daemon's idle timeout off each stream's handshake (aiohttp's WebSocket shows its
        handshake's headers no other way), and a refusal's body (its handshake error has none); the calls' own
        session is not traced, and pays nothing for it."""
        import aiohttp

        if self._ws_session is None:
            trace = aiohttp.TraceConfig()
            trace.on_request_end.append(self._handshaken)
            self._ws_session = aiohttp.ClientSession(
                connector=self._http().connector,
                connector_owner=False,
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                trace_configs=[trace],
            )
        return self._ws_session

    def _events_http(self):
        """The change streams' session: the calls' connector, and HTTP/1.0, whose answers are not chunked: a
        stream's body ends with its connection. A chunked one cut short (the daemon killed, its connection
        aborted) makes aiohttp raise at the next read, before the events it had read and the app had not yet
        (its buffer is its own); the end of an unframed body is an end like any other, every byte of it read."""
        import aiohttp

        if self._events_session is None:
            self._events_session = aiohttp.ClientSession(
                connector=self._http().connector,
                connector_owner=False,
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                version=aiohttp.HttpVersion10,
                # not kept alive (aiohttp would ask it of HTTP/1.0): a daemon that keeps the connection of a stream
                # it ended (aiohttp's server does, asked so) would leave the app waiting for its end
                headers={"Connection": "close"},
            )
        return self._events_session

    async def _handshaken(self, session, context, params) -> None:
        """A stream's handshake answered: the idle limit it names (calls.stream_idle_limit); or, refused, the
        body where the daemon says why (read here, before aiohttp raises its handshake error, which has none)."""
        import aiohttp

        resp = params.response
        if resp.status == 101:
            self._idle_limit = stream_idle_limit(resp.headers.get(KEEP_ALIVE_HEADER))
        elif resp.status >= 400:
            try:
                self._refusal = await resp.read()
            except (aiohttp.ClientError, TimeoutError):  # (its status said alone)
                pass

    def _failure(self, exc: BaseException, method: str, path: str, timeout: float | None = None) -> BaseException:
        """What a failed exchange with the daemon (aiohttp's exception, or a timeout) means to the app
        (`timeout`: the call's, if not the client's)."""
        import aiohttp

        if isinstance(exc, aiohttp.ClientConnectorError):
            why = exc.os_error
            if isinstance(why, PermissionError):
                return ClientError(f"permission denied on {self.socket}: the daemon belongs to another user")
            if isinstance(why, (FileNotFoundError, NotADirectoryError, ConnectionRefusedError)):  # (a file on its path)
                return DaemonNotRunning(self.socket, str(why.strerror or ""), self._home_hint)
            return ClientError(f"cannot connect to {self.socket}: {why.strerror or why}")
        if isinstance(exc, TimeoutError):  # aiohttp's timeouts are TimeoutErrors too
            return DaemonNotAnswering(self.socket, timeout or self.timeout, writes(method, path))
        if isinstance(exc, (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError, aiohttp.ClientPayloadError)):
            return lost(method, path)
        if isinstance(exc, aiohttp.ClientResponseError):  # a head aiohttp could not read
            return ClientError(f"what answers on {self.socket} is not a sessiond daemon: its answer is not HTTP")
        if isinstance(exc, aiohttp.ClientError):
            return ClientError(f"{method} {path} to the daemon on {self.socket} failed: {exc}")
        return exc

    async def _call(self, method: str, path: str, body: Any = None, **options: Unpack[CallOptions]):
        import aiohttp

        key, wait, headers = options.get("key"), options.get("wait"), options.get("headers")
        if key is not None:
            headers = {**(headers or {}), IDEMPOTENCY_HEADER: key}
        limit = call_timeout(self.timeout, wait)
        longer = {} if wait is None else {"timeout": aiohttp.ClientTimeout(total=limit)}  # else the session's
        if not retryable(method, key):
            await _closes_read()
        closings = self._closings
        for attempt in (0, 1):
            try:
                async with self._http().request(method, _url(path), json=body, headers=headers, **longer) as resp:
                    status, raw = resp.status, await resp.read()
                return answer_of(status, raw)
            except (aiohttp.ClientError, TimeoutError, RuntimeError) as exc:
                self._check_open(closings, method, path, key)  # the app's close() closed its connection under it?
                if isinstance(exc, RuntimeError):
                    raise
                if isinstance(exc, aiohttp.ClientConnectorError):
                    raise keyed(self._failure(exc, method, path), key, bool(attempt)) from None
                if not isinstance(
                    exc, (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError, aiohttp.ClientPayloadError)
                ):
                    raise keyed(self._failure(exc, method, path, limit), key, bool(attempt)) from None
                # aiohttp itself retries a GET on a kept-alive connection; an append with its key is
                # retried here once (answered with the first result if the daemon had committed it)
                if not retryable(method, key):
                    raise lost(method, path) from None
                if attempt:
                    failure = DaemonNotRunning(self.socket, "the connection was closed", self._home_hint)
                    raise keyed(failure, key, True) from None

    async def _append(self, sid: str, body: dict, key: str):
        """An append on an append stream, pipelined with the others in flight (client/aioappends.py); the
        client's first, or all if the daemon has no stream, a POST (as Client's). A stream that broke before
        the answer: sent again once, on a new one, with the same key (answered with the first result)."""
        if not self._appended:
            self._appended = True
        elif not self._no_stream:
            from .aioappends import AppendStreams, Broken

            if self._appends is None:
                self._appends = AppendStreams(self._open_stream)
            try:
                answer = await self._appends.append(sid, body, key, self.timeout)
            except Broken:
                failure = DaemonNotRunning(self.socket, "the connection was closed", self._home_hint)
                raise keyed(failure, key, True) from None
            except TimeoutError as exc:
                raise keyed(self._failure(exc, "GET", "/v1/appends"), key, False) from None
            if answer is not None:
                raise_for(answer["status"], answer["body"])
                return answer["body"]
        return await super()._append(sid, body, key)

    async def _open_stream(self):
        """A new append stream and the seconds it may sit idle and still be used (None: no limit named), or
        None if the daemon has none (404). (AppendStreams opens one at a time.)"""
        import aiohttp

        try:
            # pipelined: the appends in flight at once share a stream (client/aioappends.py), and the daemon
            # takes its frames together
            path = "/v1/appends?pipeline=1" if self._pipeline else "/v1/appends"
            self._idle_limit, self._refusal = None, None
            ws = await self._ws_http().ws_connect(_url(path), max_msg_size=0, autoping=True)
            return ws, self._idle_limit
        except aiohttp.WSServerHandshakeError as exc:
            refusal, self._refusal = self._refusal, None
            if exc.status in (404, 405):
                self._no_stream = True
                return None
            if exc.status == 400 and self._pipeline:
                # a daemon of before ?pipeline refuses a query parameter it does not know: its stream takes
                # the frames one at a time, in order (the pipelined ones wait in the connection)
                self._pipeline = False
                return await self._open_stream()
            if exc.status >= 400 and refusal:
                try:
                    answer_of(exc.status, refusal)
                except ApiError as said:
                    if said.code != "http_error":  # the daemon's error: its code and message, as Client says them
                        raise said from None
            # a body that is not the API's error (another program's, a proxy's): its status, and how to have a reason
            raise ApiError(
                exc.status,
                "http_error",
                f"the daemon on {self.socket} refused the append stream (HTTP {exc.status}): the append was not"
                " sent; sent by POST, with AsyncClient(append_stream=False), it is answered with the daemon's"
                " reason",
            ) from None
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise self._failure(exc, "GET", "/v1/appends") from None

    def complete_stream(
        self,
        sid: str,
        content: str | None = None,
        *,
        chat: str | None = None,
        model: str | None = None,
        provider: str | None = None,
        idempotency_key: str | None = None,
    ) -> AsyncCompletionStream:
        """As complete(), streamed: `stream = await c.complete_stream(...)` sends the question (as
        Client.complete_stream() does when it returns; `async with c.complete_stream(...) as stream` too, and
        closes it at the block's end), then `async for text in stream` yields the answer as it arrives; the
        last item is not text but the stored answer, a dict, which is also `stream.message`. Iterated without
        an await, it is sent at its first step. Stop early with `await stream.aclose()` (or leave the `async
        with`): the connection closes, and the daemon records what arrived, marked interrupted. Breaking out
        of the `async for` alone does not close it."""
        body = complete_body(content, chat, model, provider, True)
        return AsyncCompletionStream(self, sid, body, key_for(idempotency_key))

    async def _post_complete(self, sid: str, body: dict, key: str) -> tuple[Any, Any]:
        """The question of a streamed answer sent: (its answer, the stored answer if it is no stream: a
        JSON answer's, which raises if it is an error's)."""
        import aiohttp

        path = f"/v1/sessions/{quote_id(sid)}/complete"
        headers = {IDEMPOTENCY_HEADER: key}
        closings = self._closings
        for attempt in (0, 1):
            try:
                resp = await self._http().post(
                    _url(path),
                    json=body,
                    headers=headers,
                    timeout=aiohttp.ClientTimeout(total=None, sock_read=self.timeout),
                )
                break
            except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
                # a kept-alive connection the daemon had closed (idle, or it restarted): sent again once, as
                # an append with its key is; the key makes the daemon store the question and ask the model
                # once, whatever reached it the first time (daemon/complete.py); not if the app closed it
                self._check_open(closings, "POST", path, key)
                if attempt or isinstance(exc, aiohttp.ClientConnectorError):
                    raise keyed(self._failure(exc, "POST", path), key, bool(attempt)) from None
            except (aiohttp.ClientError, TimeoutError) as exc:
                self._check_open(closings, "POST", path, key)
                raise keyed(self._failure(exc, "POST", path), key, bool(attempt)) from None
        if resp.status < 400 and resp.headers.get("Content-Type", "").startswith("text/event-stream"):
            return resp, None
        try:
            raw = await resp.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise keyed(self._failure(exc, "POST", path), key, False) from None  # (the question may have been asked)
        finally:
            resp.close()
        return resp, answer_of(resp.status, raw)

    async def _answer_events(self, resp: Any, sid: str, key: str):
        """A streamed answer's texts as they arrive, then the stored answer (a dict)."""
        import aiohttp

        holder = StreamedAnswer()
        try:
            parser = SseParser()
            try:
                async for raw in resp.content:
                    done = parser.feed(raw)
                    if done is None:
                        continue
                    text = stream_event(*done, holder)
                    if text:
                        yield text
                    elif holder.message is not None:
                        yield holder.message
                        return
            except TimeoutError:
                raise broken_answer(f"the daemon sent nothing for {self.timeout:g} s", sid, key) from None
            except aiohttp.ClientError:
                pass
            raise broken_answer("the connection to the daemon broke in the middle of the answer", sid, key)
        finally:
            resp.close()  # early: the connection closes, and the daemon stops the generation

    async def _event_stream(self, last_event_id: str | None):
        """GET /v1/events (after `last_event_id`), its answer's head read."""
        import asyncio

        import aiohttp

        headers = {LAST_EVENT_ID_HEADER: last_event_id} if last_event_id else {}
        closings = self._closings
        try:
            # its head within the client's timeout (a stuck daemon: DaemonNotAnswering); its body untimed
            async with asyncio.timeout(self.timeout):  # (in this task: no turn of the loop between head and body)
                # (HTTP/1.0: not chunked, see _events_http)
                resp = await self._events_http().get(
                    "http://localhost/v1/events",
                    headers=headers,
                    timeout=aiohttp.ClientTimeout(total=None),
                )
            if resp.status >= 400:
                answer_of(resp.status, await resp.read())
        except (aiohttp.ClientError, TimeoutError, RuntimeError, AssertionError) as exc:
            # the app's close() closed its connection under it? (aiohttp then sends the GET again on the session
            # close() closed: its bare AssertionError, or RuntimeError) A read: nothing was changed
            self._check_open(closings, "GET", "/v1/events", None)
            if not isinstance(exc, (aiohttp.ClientError, TimeoutError)):
                raise
            raise self._failure(exc, "GET", "/v1/events") from None
        return resp

    def events(
        self, last_event_id: str | None = None, *, reconnect: bool = True, retry_for: float = 30.0
    ) -> AsyncEvents:
        """Change events as Client.events(): a stream that ends (the connection dropped, the daemon restarted or
        ended it) is opened again after the last event read, the events missed meanwhile first, or one
        `events.lost` event when the daemon no longer has them all; the last connection error is raised once the
        daemon answers no more for `retry_for` seconds. Without `reconnect`, the iteration ends with the first
        stream. `events = await c.events()` (or `async with c.events() as events`) is subscribed when it
        returns, as Client.events() is: a change made next is among them; `async for ev in c.events()`
        subscribes at its first step. aclose() (or leaving the `async with`) ends it."""
        return AsyncEvents(self, last_event_id, reconnect, retry_for)

    async def event_stream(self, last_event_id: str | None = None) -> AsyncEvents:
        """As Client.event_stream(): one GET /v1/events (after `last_event_id`), subscribed when this returns;
        its iteration ends with the stream (events() with reconnect=False)."""
        return await AsyncEvents(self, last_event_id, False, 0.0)

    async def _events(self, resp, owner: AsyncEvents, reconnect: bool, retry_for: float):
        """The change events of `resp` (an open GET /v1/events), then of the streams opened after it, for
        `owner` (which keeps the last event id read and the stream open)."""
        import asyncio

        import aiohttp

        backoff = Backoff(retry_for)
        closings = self._closings  # a close() of the client ends the iteration: no stream reopened after it
        while True:
            parser = SseParser()
            async with resp:
                try:
                    async for raw in resp.content:
                        done = parser.feed(raw)
                        if parser.last_id is not None:
                            owner.last_event_id = parser.last_id
                        if done is not None:
                            backoff.carried()
                            yield done[1]
                except aiohttp.ClientError:  # broken or closed: the stream's end, as the blocking client's
                    pass
            # (a close() of the client, or the stream's aclose() from another task, which closed its connection)
            if not reconnect or self._closings != closings or owner.closed:
                return
            error: BaseException | None = None
            while True:
                await asyncio.sleep(backoff.next(error))
                if self._closings != closings or owner.closed:
                    return
                try:
                    resp = await self._event_stream(owner.last_event_id)
                    if owner.closed:  # closed while it was being opened
                        resp.close()
                        return
                    owner.resp = resp
                    break
                except ApiError:
                    raise
                except ClientError as exc:
                    error = exc
