"""`Client`: the blocking client, HTTP/1.1 over the daemon's Unix socket (wire.py for the calls, http.client
for the streams), standard library only so that the CLI starts fast. One kept-alive connection; a request
whose connection broke before an answer is sent again once only if it is idempotent (calls.retryable)."""

from __future__ import annotations

import http.client
import json
import socket
import threading
from typing import TYPE_CHECKING, Any

from ..api.locate import default_home, resolve_home
from .calls import (
    IDEMPOTENCY_HEADER,
    LAST_EVENT_ID_HEADER,
    Api,
    call_timeout,
    complete_body,
    key_for,
    locate_socket,
    quote_id,
    retryable,
)
from .errors import ClientError, DaemonNotAnswering, DaemonNotRunning, answer_of, keyed, lost, raise_for, writes
from .streams import CompletionStream, EventStream, ResumingEvents, close_under_reader
from .wire import Connection, request_head
from .wsframes import AppendStream, NoStream, Refused

if TYPE_CHECKING:
    from typing import Unpack

    from .calls import CallOptions


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float):
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self._path)
        self.sock = s


class Client(Api):
    """Blocking client (standard library only, so the CLI starts fast). Threads may share one: their
    calls take turns on its connection (a Client per thread makes them in parallel)."""

    def __init__(
        self, home: str | None = None, *, socket: str | None = None, timeout: float = 300.0, append_stream: bool = True
    ):
        """`append_stream`: appends from the second on on the append stream (GET /v1/appends) when the daemon
        has one; False: as POSTs (e.g. through a proxy that knows no WebSocket)."""
        self.home = resolve_home(home)
        self.socket = locate_socket(self.home, socket)
        self.timeout = timeout
        self._home_hint = None if self.home == default_home() else self.home  # for DaemonNotRunning
        self._conn: Connection | None = None  # the calls' kept-alive connection (wire.py)
        self._stream: AppendStream | None = None  # the appends' stream (wsframes.py), opened by the second
        self._no_stream = not append_stream  # or the daemon has none (older): appends are POSTs
        self._appended = False  # an append was made: the next opens the stream (the first is a POST)
        # threads sharing this client take turns on those connections (reentrant: close() from a signal handler
        # that interrupted a call of its own thread closes the connection under it rather than wait for itself)
        self._turn = threading.RLock()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Close its connections, once a call another thread has under way is answered (not under it: its
        request may have been done, its answer lost); a call after close() opens new ones. Called during a
        call of its own thread (from a signal handler), it closes that call's connection under it: the call
        raises ClientError, and if it may have changed something, with done_unknown set and, for an append,
        its idempotency_key (sent again with it, the append is done once) as the clients' other unknown
        outcomes. The streams (events(), complete_stream()) have connections of their own, which their own
        close() closes."""
        with self._turn:
            self._closings += 1  # (while a call holds the turn, only its own thread comes here: a signal handler)
            self._close()

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        self._close_stream()

    def _close_stream(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None

    def _append(self, sid: str, body: dict, key: str):
        """An append on the append stream (opened by the second, kept); the first, or all if the daemon has
        no stream, a POST (a script that appends once does not pay the stream's handshake). A stream that
        broke before the answer: sent again once, on a new one, with the same key (the daemon answers a key
        it has seen with its first result)."""
        if not self._appended:
            self._appended = True
        elif not self._no_stream:
            payload = json.dumps(body).encode()
            with self._turn:
                answer = self._streamed(sid, key, payload)
            if answer is not None:
                status, data = answer
                raise_for(status, data)
                return data
        return super()._append(sid, body, key)

    def _streamed(self, sid: str, key: str, payload: bytes) -> tuple[int, Any] | None:
        """(status, answer) of an append on the stream, or None if the daemon has none."""
        if self._stream is not None and (self._stream.closed_by_peer() or self._stream.idle_too_long()):
            # closed while idle, or idle long enough that its close may be on its way: a new stream takes this
            # append, which no close drops (and which is not sent twice)
            self._close_stream()
        closings = self._closings
        for attempt in (0, 1):
            try:
                if self._stream is None:
                    self._stream = AppendStream(self.socket, self.timeout)
                return self._stream.append(sid, key, payload)
            except NoStream:
                self._no_stream = True
                return None
            except Refused as exc:
                try:
                    answer_of(exc.status, exc.body)  # its ApiError
                    refused = ClientError(f"the daemon refused the append stream (HTTP {exc.status})")
                except ClientError as err:
                    refused = err
                raise keyed(refused, key, bool(attempt)) from None
            except (BrokenPipeError, ConnectionResetError):  # wire.Disconnected too: a broken stream
                self._close_stream()
                self._check_open(closings, "POST", f"/v1/sessions/{quote_id(sid)}/messages", key)
                if attempt:
                    failure = DaemonNotRunning(self.socket, "the connection was closed", self._home_hint)
                    raise keyed(failure, key, True) from None
            except (OSError, ValueError, IndexError) as exc:
                self._close_stream()
                # (a recv on the socket closed under it: EBADF)
                self._check_open(closings, "POST", f"/v1/sessions/{quote_id(sid)}/messages", key)
                raise keyed(self._failure(exc, "GET", "/v1/appends"), key, bool(attempt)) from None
            except BaseException:  # e.g. Ctrl-C mid-append: its answer, still to come, must not be the next one's
                self._close_stream()
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _request(
        self,
        method: str,
        path: str,
        body: Any = None,
        key: str | None = None,
        wait: float | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, bytes]:
        payload = None if body is None else json.dumps(body).encode()
        head = request_head(method, path, payload, key, IDEMPOTENCY_HEADER, headers)
        request = head if payload is None else head + payload
        retry = retryable(method, key)
        with self._turn:
            return self._exchange(
                method, path, request, retry, None if wait is None else call_timeout(self.timeout, wait), key
            )

    def _exchange(
        self, method: str, path: str, request: bytes, retry: bool, timeout: float | None, key: str | None = None
    ) -> tuple[int, bytes]:
        """`key`: the request's Idempotency-Key, named by an error that leaves its outcome unknown (keyed)."""
        closings = self._closings
        for attempt in (0, 1):
            if self._conn is not None and not retry and self._conn.closed_by_peer():
                self._close()  # what cannot be retried is not sent on a connection the daemon already closed
            if self._conn is None:
                self._conn = Connection(self.socket, self.timeout)
            try:
                return self._conn.exchange(request, timeout)
            except (BrokenPipeError, ConnectionResetError):  # wire.Disconnected too
                self._close()  # a kept-alive connection the daemon closed: retry once on a fresh one
                self._check_open(closings, method, path, key)
                if not retry:
                    raise lost(method, path) from None
                if attempt:
                    failure = DaemonNotRunning(self.socket, "the connection was closed", self._home_hint)
                    raise keyed(failure, key, True) from None
            except (OSError, ValueError, IndexError) as exc:
                self._close()
                self._check_open(closings, method, path, key)  # (a recv on the socket closed under it: EBADF)
                raise keyed(self._failure(exc, method, path, timeout), key, bool(attempt)) from None
            except BaseException:  # e.g. Ctrl-C mid-call: its answer, still to come, must not be the next call's
                self._close()
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _failure(self, exc: Exception, method: str, path: str, timeout: float | None = None) -> ClientError:
        """What a failed exchange with the daemon (a socket's or http.client's exception) means to the app
        (`timeout`: the call's, if not the client's)."""
        if isinstance(exc, (FileNotFoundError, NotADirectoryError, ConnectionRefusedError)):  # (a file on its path)
            return DaemonNotRunning(self.socket, exc.strerror or "", self._home_hint)
        if isinstance(exc, PermissionError):
            return ClientError(f"permission denied on {self.socket}: the daemon belongs to another user")
        if isinstance(exc, TimeoutError):
            return DaemonNotAnswering(self.socket, timeout or self.timeout, writes(method, path))
        if isinstance(exc, (ConnectionError, http.client.IncompleteRead)):  # reset, closed (RemoteDisconnected)
            return lost(method, path)
        if isinstance(exc, (ValueError, IndexError, http.client.HTTPException)):
            return ClientError(f"what answers on {self.socket} is not a sessiond daemon: its answer is not HTTP")
        # e.g. a home that is a file, a path too long for a socket
        return ClientError(f"cannot connect to {self.socket}: {getattr(exc, 'strerror', None) or exc}")

    def _call(self, method: str, path: str, body: Any = None, **options: Unpack[CallOptions]):
        return answer_of(*self._request(method, path, body, **options))

    def _open(
        self, method: str, path: str, body: bytes | None, headers: dict, timeout: float | None
    ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        """A request on a connection of its own (a stream's), its answer's head read: (connection, answer);
        an error answer raises its ApiError."""
        conn = _UnixHTTPConnection(self.socket, timeout)  # type: ignore[arg-type]
        try:
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            if resp.status >= 400:
                answer_of(resp.status, resp.read())
        except (OSError, ValueError, http.client.HTTPException) as exc:
            conn.close()
            raise keyed(self._failure(exc, method, path), headers.get(IDEMPOTENCY_HEADER), False) from None
        except BaseException:
            conn.close()
            raise
        return conn, resp

    def complete_stream(
        self,
        sid: str,
        content: str | None = None,
        *,
        chat: str | None = None,
        model: str | None = None,
        provider: str | None = None,
        idempotency_key: str | None = None,
    ) -> CompletionStream:
        """As complete(), streamed: `for text in c.complete_stream(...)` gives the answer as it arrives,
        then the stream's .message is the stored answer."""
        path = f"/v1/sessions/{quote_id(sid)}/complete"
        body = json.dumps(complete_body(content, chat, model, provider, True)).encode()
        headers = {"Content-Type": "application/json", IDEMPOTENCY_HEADER: key_for(idempotency_key)}
        # a connection of its own: closing it stops the generation
        conn, resp = self._open("POST", path, body, headers, self.timeout)
        try:
            stream = CompletionStream(conn, resp, sid, self.timeout, headers[IDEMPOTENCY_HEADER])
            if not resp.getheader("Content-Type", "").startswith("text/event-stream"):
                try:
                    stream.message = answer_of(resp.status, resp.read())
                except (OSError, http.client.HTTPException) as exc:  # (the question may have been stored, answered)
                    raise keyed(self._failure(exc, "POST", path), headers[IDEMPOTENCY_HEADER], False) from None
                finally:
                    conn.close()
        except BaseException:  # (Ctrl-C before the caller has the stream to close): closed here, so that the daemon
            # sees the app leave and stops the generation; else the connection stayed open for as long as the
            # exception's traceback held it (`ask` asking what was kept), and the whole answer was recorded
            close_under_reader(conn)
            raise
        return stream

    def event_stream(self, last_event_id: str | None = None) -> EventStream:
        """GET /v1/events, subscribed when this returns (the daemon subscribes as it answers): iterate
        for the change events; close() from any thread ends the iteration. `last_event_id` (an event's
        "id", or a stream's .last_event_id): resume after it, as events() does."""
        headers = {LAST_EVENT_ID_HEADER: last_event_id} if last_event_id else {}
        conn, resp = self._open("GET", "/v1/events", None, headers, self.timeout)  # a stuck daemon: DaemonNotAnswering
        if conn.sock is not None:
            conn.sock.settimeout(None)  # its head came in time: the stream may then be quiet for as long as it likes
        return EventStream(conn, resp, last_event_id)

    def events(
        self, last_event_id: str | None = None, *, reconnect: bool = True, retry_for: float = 30.0
    ) -> ResumingEvents:
        """Change events as they happen (blocking), subscribed when this returns; close() from any thread
        ends the iteration. A stream that ends (the connection dropped, the daemon restarted or ended it)
        is opened again after the last event read (`last_event_id`: to start after an event of an earlier
        stream): the events missed meanwhile come first, or one `events.lost` event (its "reason":
        "restarted", "too_old") when the daemon no longer has them all, so that the app reads again what
        it follows. Raises the last connection error once the daemon answers no more for `retry_for`
        seconds; without `reconnect`, the iteration ends with the first stream."""
        return ResumingEvents(self.event_stream, last_event_id, reconnect, retry_for)
