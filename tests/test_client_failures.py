"""What an app gets from the Python clients when what answers on the socket fails: no answer, a closed
connection, an answer that is not HTTP, or one cut short. Always a ClientError that says what happened
(DaemonNotRunning, ApiError or ClientError itself), never a raw socket, http.client or aiohttp error."""

from __future__ import annotations

import contextlib
import signal
import socket
import threading

import pytest

from sessiond.client import ApiError, AsyncClient, Client, ClientError

SSE_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


@pytest.fixture
def canned(tmp_path):
    """canned(reply, hold=False, after=0): the path of a Unix socket whose server reads a request, sends `reply`
    (`after` seconds later)
    and then ends the connection, or, with `hold`, keeps it open without a word more (a hung daemon)."""
    listeners: list[socket.socket] = []
    release = threading.Event()

    def make(reply: bytes, hold: bool = False, after: float = 0.0) -> str:
        path = str(tmp_path / f"s{len(listeners)}.sock")
        srv = socket.socket(socket.AF_UNIX)
        srv.bind(path)
        srv.listen(8)
        listeners.append(srv)

        def answer(conn: socket.socket) -> None:
            with conn, contextlib.suppress(OSError):  # (a client that gave up and closed: nothing to tell)
                conn.recv(65536)
                if after:
                    release.wait(after)  # the fault itself (a daemon slow to answer), not a wait
                conn.sendall(reply)
                if hold:
                    release.wait(30)
                    return
                conn.shutdown(socket.SHUT_WR)  # the end of the answer; what more the client sends is read
                while conn.recv(65536):
                    pass

        def serve() -> None:
            while True:
                try:
                    conn, _ = srv.accept()
                except OSError:
                    return
                threading.Thread(target=answer, args=(conn,), daemon=True).start()

        threading.Thread(target=serve, daemon=True).start()
        return path

    yield make
    release.set()
    for srv in listeners:
        srv.close()


def _fails_clearly(call, *says: str) -> ClientError:
    with pytest.raises(ClientError) as info:
        call()
    for s in says:
        assert s in str(info.value), (s, str(info.value))
    return info.value


def _stream(c: Client):
    return list(c.complete_stream("s1", "hello"))


def test_a_hung_daemon_is_a_timeout_that_says_so_on_every_call(canned):
    c = Client(socket=canned(b"", hold=True), timeout=0.3)
    for call in (c.status, lambda: c.create_session(name="x"), lambda: _stream(c)):
        _fails_clearly(call, "did not answer within 0.3 s")


def test_a_stream_that_stops_midway_is_a_timeout_that_says_so(canned):
    delta = b'event: delta\ndata: {"content": "Hel"}\n\n'
    c = Client(socket=canned(SSE_HEAD + _chunk(delta), hold=True), timeout=0.3)
    stream = c.complete_stream("s1", "hello")
    got: list[str] = []
    with pytest.raises(ClientError, match=r"sent nothing for 0\.3 s") as info:
        got.extend(stream)
    assert got == ["Hel"] and "sessiond log s1" in str(info.value)


def test_a_stream_cut_midway_says_what_to_check(canned):
    delta = b'event: delta\ndata: {"content": "Hel"}\n\n'
    c = Client(socket=canned(SSE_HEAD + _chunk(delta)))  # then the connection closes: no end of the body
    _fails_clearly(lambda: _stream(c), "broke in the middle of the answer", "sessiond log s1")


def test_a_connection_closed_before_an_answer(canned):
    c = Client(socket=canned(b""))
    _fails_clearly(lambda: _stream(c), "broke before it answered POST /v1/sessions/s1/complete")
    with pytest.raises(ClientError):
        list(c.event_stream())
    with pytest.raises(ClientError):
        list(c.events())


@pytest.mark.parametrize(
    "reply",
    [
        b"garbage garbage\r\n\r\n",
        b"HTTP/1.1 abc OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n{}",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
    ],
)
def test_an_answer_that_is_not_http(canned, reply):
    c = Client(socket=canned(reply))
    for call in (c.status, lambda: c.create_session(name="x")):
        _fails_clearly(call, "not HTTP")
    if b"200" not in reply:  # its status line already (http.client reads a bad length as none)
        _fails_clearly(lambda: _stream(c), "not HTTP")
        _fails_clearly(c.event_stream, "not HTTP")


def test_an_error_answer_of_another_shape_is_an_api_error(canned):
    body = b'{"error": "boom"}'
    c = Client(socket=canned(b"HTTP/1.1 500 Oops\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)))
    for call in (c.status, lambda: _stream(c), lambda: list(c.event_stream()), lambda: list(c.events())):
        with pytest.raises(ApiError) as info:
            call()
        assert info.value.status == 500 and "HTTP 500" in str(info.value)


def test_an_event_stream_cut_by_the_daemon_ends_its_iteration(canned):
    event = b'event: session.created\ndata: {"session": "s1"}\n\n'
    path = canned(SSE_HEAD + _chunk(event))  # then the connection ends, with no end of the body (kill -9)
    assert [ev["session"] for ev in Client(socket=path).event_stream()] == ["s1"]


# The asyncio client, the same failures.


async def _astream(c: AsyncClient) -> list:
    return [x async for x in c.complete_stream("s1", "hello")]


async def _afails_clearly(coro, *says: str) -> ClientError:
    with pytest.raises(ClientError) as info:
        await coro
    for s in says:
        assert s in str(info.value), (s, str(info.value))
    return info.value


async def test_async_a_hung_daemon_is_a_timeout_that_says_so(canned):
    async with AsyncClient(socket=canned(b"", hold=True), timeout=0.3) as c:
        for coro in (c.status(), c.create_session(name="x"), _astream(c)):
            await _afails_clearly(coro, "did not answer within 0.3 s")


async def test_async_a_stream_that_stops_or_breaks_midway_says_so(canned):
    delta = b'event: delta\ndata: {"content": "Hel"}\n\n'
    for hold, says in ((True, "sent nothing for 0.3 s"), (False, "broke in the middle of the answer")):
        async with AsyncClient(socket=canned(SSE_HEAD + _chunk(delta), hold=hold), timeout=0.3) as c:
            got: list = []
            with pytest.raises(ClientError) as info:
                async for text in c.complete_stream("s1", "hello"):
                    got.append(text)
            assert got == ["Hel"] and says in str(info.value) and "sessiond log s1" in str(info.value)


async def test_async_a_connection_closed_before_an_answer(canned):
    async with AsyncClient(socket=canned(b"")) as c:
        await _afails_clearly(_astream(c), "broke before it answered POST /v1/sessions/s1/complete")
        await _afails_clearly(c.create_session(name="x"), "broke before it answered POST /v1/sessions")
        await _afails_clearly(c.status(), "no sessiond daemon answers")


@pytest.mark.parametrize("reply", [b"garbage garbage\r\n\r\n", b"HTTP/1.1 abc OK\r\n\r\n"])
async def test_async_an_answer_that_is_not_http(canned, reply):
    async with AsyncClient(socket=canned(reply)) as c:
        for coro in (c.status(), c.create_session(name="x"), _astream(c)):
            await _afails_clearly(coro, "not HTTP")


async def test_async_an_error_answer_of_another_shape_is_an_api_error(canned):
    body = b'{"error": "boom"}'
    path = canned(b"HTTP/1.1 500 Oops\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))

    async def events(c: AsyncClient) -> list:
        return [ev async for ev in c.events()]

    for call in (lambda c: c.status(), _astream, events):
        async with AsyncClient(socket=path) as c:  # one each: the server closes a connection after its answer
            with pytest.raises(ApiError) as info:
                await call(c)
        assert info.value.status == 500 and "HTTP 500" in str(info.value)


async def test_async_an_event_stream_cut_by_the_daemon_ends_its_iteration(canned):
    event = b'event: session.created\ndata: {"session": "s1"}\n\n'
    async with AsyncClient(socket=canned(SSE_HEAD + _chunk(event))) as c:
        assert [ev["session"] async for ev in c.events(reconnect=False)] == ["s1"]


def test_a_call_interrupted_by_ctrl_c_leaves_no_answer_for_the_next(tmp_path):
    """Ctrl-C (KeyboardInterrupt, as in a REPL or a notebook) during a call: the next call on the same
    client gets its own answer, not the interrupted call's, which the daemon sends later."""
    path = str(tmp_path / "s.sock")
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(path)
    srv.listen(8)
    asked, release = threading.Event(), threading.Event()

    def answer(conn: socket.socket, n: int) -> None:
        with conn, contextlib.suppress(OSError):  # (the slow answer may find its connection closed)
            while data := conn.recv(65536):  # every request on this connection, answered in order
                if n == 0:
                    asked.set()
                    release.wait(30)  # the first is slow: answered after the app gave up on it
                body = b'{"path": "%s"}' % data.split(b" ")[1]
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
                n = 1

    def serve() -> None:
        for n in range(2):
            conn, _ = srv.accept()
            threading.Thread(target=answer, args=(conn, n), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    c = Client(socket=path)

    def interrupt() -> None:
        asked.wait(10)
        signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)  # as Ctrl-C does

    threading.Thread(target=interrupt, daemon=True).start()
    try:
        with pytest.raises(KeyboardInterrupt):
            c.list_sessions()
        release.set()
        assert c.status() == {"path": "/v1/status"}
    finally:
        release.set()
        c.close()
        srv.close()


SYNCED = b'{"complete": true, "pushed": true, "sessions": {}}'
SLOW_SYNC = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(SYNCED), SYNCED)


def test_a_sync_that_waits_longer_than_the_client_timeout_gets_its_answer(canned):
    """sync(wait=True, timeout=T): the daemon may take T seconds by request; the client waits for that."""
    c = Client(socket=canned(SLOW_SYNC, after=1.0), timeout=0.3)
    assert c.sync(wait=True, timeout=2)["complete"] is True
    _fails_clearly(c.status, "did not answer within 0.3 s")  # the client's own timeout again


async def test_async_a_sync_that_waits_longer_than_the_client_timeout_gets_its_answer(canned):
    async with AsyncClient(socket=canned(SLOW_SYNC, after=1.0), timeout=0.3) as c:
        assert (await c.sync(wait=True, timeout=2))["complete"] is True
        await _afails_clearly(c.status(), "did not answer within 0.3 s")


def test_a_streamed_answer_closed_from_another_thread_ends_its_iteration(canned):
    """A Stop button: close() from another thread while the reader waits for the model's next words
    ends the reader's iteration, quietly (the daemon records what arrived, marked interrupted)."""
    delta = b'event: delta\ndata: {"content": "Hel"}\n\n'
    stream = Client(socket=canned(SSE_HEAD + _chunk(delta), hold=True)).complete_stream("s1", "hello")
    got: list[str] = []
    errors: list[BaseException] = []
    first = threading.Event()

    def read() -> None:
        try:
            for text in stream:
                got.append(text)
                first.set()
        except BaseException as e:  # (what the thread would have died of)
            errors.append(e)

    t = threading.Thread(target=read, daemon=True)
    t.start()
    assert first.wait(10)
    stream.close()
    t.join(timeout=10)
    assert not t.is_alive() and errors == [] and got == ["Hel"] and stream.message is None


async def test_async_a_streamed_question_on_a_connection_the_daemon_closed_is_sent_again(tmp_path):
    """The question went out on a kept-alive connection the daemon closed as it arrived (idle, restarting):
    its Idempotency-Key makes a second try safe (the daemon stores it and asks the model once), so it is
    sent again on a new connection, with the same key, instead of failing as a broken connection."""
    path = str(tmp_path / "d.sock")
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(path)
    srv.listen(4)
    keys: list[bytes] = []
    status = b'{"version": "x"}'
    events = b'event: delta\ndata: {"content": "hi"}\n\nevent: message\ndata: {"id": "m1", "content": "hi"}\n\n'

    def key_of(request: bytes) -> bytes:
        line = next(x for x in request.split(b"\r\n") if x.lower().startswith(b"idempotency-key:"))
        return line.split(b":", 1)[1].strip()

    def serve() -> None:
        with srv.accept()[0] as first:  # a status, kept alive; then the question, and closed unanswered
            first.recv(65536)
            first.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                % (len(status), status)
            )
            keys.append(key_of(first.recv(65536)))
        with srv.accept()[0] as second:  # the question again
            keys.append(key_of(second.recv(65536)))
            second.sendall(SSE_HEAD + _chunk(events) + b"0\r\n\r\n")

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        async with AsyncClient(socket=path, timeout=5) as c:
            await c.status()
            parts = [x async for x in c.complete_stream("s1", "hello")]
        assert parts == ["hi", {"id": "m1", "content": "hi"}]
        assert len(keys) == 2 and keys[0] == keys[1]  # the same key both times
    finally:
        srv.close()
        t.join(5)
