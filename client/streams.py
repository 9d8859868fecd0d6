"""Reading the daemon's server-sent event streams: the change events of GET /v1/events and a streamed
answer of POST /v1/sessions/{id}/complete. `SseParser` reads either, a line at a time, for both
clients; `CompletionStream` is the blocking client's streamed answer."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from .errors import ApiError, ClientError

if TYPE_CHECKING:
    from ..api.messages import Message


class SseParser:
    """Server-sent events, fed one line at a time: `feed` returns (event name, decoded JSON data) when
    the blank line that ends an event arrives, else None. Comments (": keep-alive") are skipped. `last_id`
    is the last `id:` line's, also of a block with no data (a change stream's start: where it is)."""

    def __init__(self) -> None:
        self.event = "message"
        self.data: list[str] = []
        self.id: str | None = None
        self.last_id: str | None = None

    def feed(self, raw: bytes) -> tuple[str, Any] | None:
        line = raw.decode("utf-8").rstrip("\r\n")
        if line.startswith("event:"):
            self.event = line[6:].strip()
        elif line.startswith("data:"):
            self.data.append(line[5:].lstrip(" "))
        elif line.startswith("id:"):
            self.id = line[3:].strip()
        elif not line:
            if self.id is not None:
                self.last_id, self.id = self.id, None
            if self.data:
                done = self.event, json.loads("\n".join(self.data))
                self.event, self.data = "message", []
                return done
            self.event = "message"
        return None


def broken_answer(what: str, sid: str, key: str | None = None) -> ClientError:
    """The error of a streamed answer that stopped before the stored message; `key`: the question's
    Idempotency-Key (.idempotency_key), with which the app learns what was recorded (`asked`) or asks again (the
    question stored once). The message, which `sessiond ask` shows too, names the command that shows it."""
    exc = ClientError(
        f"{what}; the daemon records what it had of the answer, marked interrupted, unless it stopped "
        f"first: see `sessiond log {sid}`"
    )
    exc.done_unknown = True
    exc.idempotency_key = key
    return exc


class StreamedAnswer:
    """Where the async client keeps a streamed answer's stored message as it arrives."""

    def __init__(self) -> None:
        self.message: Message | None = None


def stream_event(event: str, data: Any, stream: StreamedAnswer | CompletionStream) -> str | None:
    """One event of a streamed answer: a delta's text, or None (the stored message is kept on the
    stream as .message; an error raises ApiError, with the partial answer as recorded in .details)."""
    if event == "delta":
        return data.get("content", "")
    if event == "message":
        stream.message = data
    elif event == "error":
        err = data.get("error", {})
        details = dict(err.get("details") or {})
        if data.get("message") is not None:
            stream.message = details["message"] = data["message"]
        status = err.get("status")
        raise ApiError(
            status if type(status) is int else 502 if err.get("code") != "provider_timeout" else 504,
            err.get("code", "provider_error"),
            err.get("message", "the model's answer failed"),
            details,
        )
    return None


class CompletionStream:
    """A streamed answer: iterate over it for the text as it arrives; afterwards .message is the stored
    answer. close() (or leaving a `with` block) early, from any thread, stops the generation and ends
    the iteration; the daemon records what arrived, marked interrupted."""

    def __init__(
        self,
        conn: http.client.HTTPConnection,
        resp: http.client.HTTPResponse,
        sid: str = "",
        timeout: float = 0,
        key: str | None = None,
    ):
        """`key`: the question's Idempotency-Key, named by the error of a stream that breaks."""
        self._conn, self._resp = conn, resp
        self._sid, self._timeout, self._key = sid, timeout, key
        self._stopped = False  # close() was called: the iteration's end is the app's doing
        self.message: Message | None = None

    def __iter__(self) -> Iterator[str]:
        parser = SseParser()
        lines = body_lines(self._resp)
        try:
            while True:
                try:
                    line = next(lines, b"")
                except TimeoutError:
                    if self._stopped:
                        return
                    raise broken_answer(
                        f"the daemon sent nothing for {self._timeout:g} s", self._sid, self._key
                    ) from None
                except (OSError, ValueError):  # the connection broke, or was closed under the reader
                    line = b""
                if not line:
                    break
                done = parser.feed(line)
                if done is not None:
                    text = stream_event(*done, self)
                    if text:
                        yield text
        finally:
            close_under_reader(self._conn)
        if self.message is None and not self._stopped:
            raise broken_answer("the connection to the daemon broke in the middle of the answer", self._sid, self._key)

    def close(self) -> None:
        self._stopped = True
        close_under_reader(self._conn)

    def __enter__(self) -> CompletionStream:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def body_lines(resp: http.client.HTTPResponse) -> Iterator[bytes]:
    """A streamed body's lines as they arrive, its chunked framing undone, until its end (the last chunk:
    the daemon ended it, the connection kept alive) or the connection's. Read from the response's file
    with a reference of its own: closing the response (EventStream.close, any thread) sets resp.fp to
    None, and a read after that raises ValueError or OSError."""
    fp = resp.fp
    if fp is None:  # closed already
        return
    if not resp.chunked:
        yield from iter(fp.readline, b"")
        return
    partial = b""
    while True:
        size = fp.readline()
        if not size:
            return
        n = int(size.split(b";", 1)[0], 16)
        if n == 0:
            return
        data = fp.read(n)
        *lines, partial = (partial + data).split(b"\n")
        for line in lines:  # also those of a chunk cut short (a connection aborted): the lines it has are whole
            yield line + b"\n"
        if len(data) < n or fp.read(2) != b"\r\n":
            return  # the connection ended inside the chunk


class EventStream:
    """An open GET /v1/events: iterate for its change events; close() (from any thread) ends it.
    `last_event_id`: the id of the last event read (or of the stream's start), to resume after."""

    def __init__(self, conn: http.client.HTTPConnection, resp: http.client.HTTPResponse, last_event_id=None):
        self._conn, self._resp = conn, resp
        self.last_event_id: str | None = last_event_id

    def __iter__(self) -> Iterator[dict]:
        parser = SseParser()
        try:
            for line in body_lines(self._resp):
                done = parser.feed(line)
                if parser.last_id is not None:
                    self.last_event_id = parser.last_id
                if done is not None:
                    yield done[1]
        except (OSError, ValueError):  # closed under the reader
            return

    def close(self) -> None:
        close_under_reader(self._conn)

    def __enter__(self) -> EventStream:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Backoff:
    """The waits between a change stream's reconnections: from 0.05 s, doubling to 1 s; back to the start
    once a stream carried an event; over once `retry_for` seconds passed without a stream opening."""

    def __init__(self, retry_for: float):
        self.retry_for = retry_for
        self.wait = 0.05
        self.since: float | None = None

    def next(self, error: BaseException | None) -> float:
        """The wait before the next attempt, after one that failed with `error` (None: a stream that ended);
        raises `error` once the time is up."""
        now = time.monotonic()
        if error is None:
            self.since = None
        elif self.since is None:
            self.since = now
        elif now - self.since >= self.retry_for:
            raise error
        wait, self.wait = self.wait, min(self.wait * 2, 1.0)
        return wait

    def carried(self) -> None:
        self.wait = 0.05


class ResumingEvents:
    """Client.events(): change events from streams opened one after the other, each after the last event
    read (see there). Iterate for the events; close() (from any thread) ends the iteration."""

    def __init__(self, open_stream: Callable[[str | None], EventStream], last_event_id, reconnect, retry_for):
        self._open, self._reconnect = open_stream, reconnect
        self._closed = threading.Event()
        self._stream = open_stream(last_event_id)  # subscribed when this returns; a failure raises now
        self._events = self._run(Backoff(retry_for))

    @property
    def last_event_id(self) -> str | None:
        return self._stream.last_event_id

    def __iter__(self) -> ResumingEvents:
        return self

    def __next__(self) -> dict:
        return next(self._events)

    def _run(self, backoff: Backoff) -> Iterator[dict]:
        try:
            while True:
                for ev in self._stream:
                    backoff.carried()
                    yield ev
                self._stream.close()
                if not self._reconnect:
                    return
                error: ClientError | None = None
                while True:
                    if self._closed.wait(backoff.next(error)):
                        return
                    try:
                        self._stream = self._open(self._stream.last_event_id)
                        break
                    except ApiError:
                        raise
                    except ClientError as exc:
                        error = exc
                if self._closed.is_set():  # closed while it opened
                    return
        finally:
            self._stream.close()

    def close(self) -> None:
        self._closed.set()
        self._stream.close()

    def __enter__(self) -> ResumingEvents:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def close_under_reader(conn: http.client.HTTPConnection) -> None:
    """Close a stream's connection, waking a reader blocked on it in another thread."""
    sock = conn.sock
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)  # a close alone does not wake a thread blocked in recv
        except OSError:
            pass
    conn.close()
