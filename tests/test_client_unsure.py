"""An append or a question whose outcome the client cannot know: its connection broke before the answer, and
the client's one retry (with the same Idempotency-Key) could not reach the daemon either, or no answer came in
time. The daemon may have done it: the error says so (`done_unknown`) and names the key (`idempotency_key`),
with which the app sends it again once the daemon is back and it is done once, never twice, though the app
never chose a key itself."""

from __future__ import annotations

import socket
import threading

import pytest

from sessiond.client import AsyncClient, Client, ClientError, DaemonNotAnswering, DaemonNotRunning
from unixproxy import UnixProxy, hung_listener


class GoneAfterCommit(UnixProxy):
    """In front of a daemon: both ways until `armed` is set; then the daemon's next answer on any connection
    (to a request it took, and did) is dropped, both connections are closed and the proxy listens no more,
    as if the daemon had been killed just after its commit: the client's retry finds nobody."""

    def __init__(self, upstream: str):
        self.armed = threading.Event()
        self.cut = threading.Event()
        super().__init__(upstream)

    def handle(self, app: socket.socket, daemon: socket.socket) -> None:
        def pipe(src: socket.socket, dst: socket.socket, answers: bool) -> None:
            try:
                while data := src.recv(65536):
                    if answers and self.armed.is_set():
                        self.cut.set()
                        self.close()  # no more connections: the retry is refused
                        break
                    dst.sendall(data)
            except OSError:
                pass
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)  # the other thread is in recv() on one
                except OSError:
                    pass

        threading.Thread(target=pipe, args=(app, daemon, False), daemon=True).start()
        threading.Thread(target=pipe, args=(daemon, app, True), daemon=True).start()


def _says_unsure(exc: ClientError) -> str:
    assert isinstance(exc, DaemonNotRunning), exc
    assert exc.done_unknown is True
    key = exc.idempotency_key
    assert key and f"idempotency_key={key!r}" in str(exc) and "may or may not have been done" in str(exc)
    return key


def _stored_once(daemon, sid: str, key: str, content: str) -> None:
    """Sent again with the error's key, the append is answered by its first result: stored once."""
    with daemon.client() as c:
        again = c.append(sid, "user", content, idempotency_key=key)
        got = [m for m in c.messages(sid)["messages"] if m["content"] == content]
    assert [m["id"] for m in got] == [again["id"]]


@pytest.mark.parametrize("on_stream", [False, True])
def test_an_append_done_but_unanswered_and_not_retried_names_its_key(daemon, on_stream):
    sid = daemon.client().create_session(name="s")["id"]
    proxy = GoneAfterCommit(daemon.socket)
    try:
        with Client(daemon.home, socket=proxy.path, timeout=10) as c:
            if on_stream:  # the first append is a POST, the second opens the stream
                c.append(sid, "user", "one")
                c.append(sid, "user", "two")
            proxy.armed.set()
            with pytest.raises(DaemonNotRunning) as info:
                c.append(sid, "user", "lost answer")
            assert proxy.cut.is_set()
    finally:
        proxy.close()
    _stored_once(daemon, sid, _says_unsure(info.value), "lost answer")


@pytest.mark.parametrize("on_stream", [False, True])
async def test_async_an_append_done_but_unanswered_and_not_retried_names_its_key(daemon, on_stream):
    sid = daemon.client().create_session(name="s")["id"]
    proxy = GoneAfterCommit(daemon.socket)
    try:
        async with AsyncClient(daemon.home, socket=proxy.path, timeout=10) as ac:
            if on_stream:
                ac._appended = True  # straight to the stream (the POST's kept-alive connection would carry it)
                await ac.append(sid, "user", "one")
            proxy.armed.set()
            with pytest.raises(DaemonNotRunning) as info:
                await ac.append(sid, "user", "lost answer")
            assert proxy.cut.is_set()
    finally:
        proxy.close()
    _stored_once(daemon, sid, _says_unsure(info.value), "lost answer")


def test_an_append_the_daemon_did_not_answer_in_time_names_its_key(tmp_path):
    path = str(tmp_path / "hung.sock")
    with hung_listener(path), Client(socket=path, timeout=0.3) as c, pytest.raises(DaemonNotAnswering) as info:
        c.append("s1", "user", "hello", idempotency_key="k-1")
    assert info.value.done_unknown and info.value.idempotency_key == "k-1"
    assert "idempotency_key='k-1'" in str(info.value)


def test_the_cli_says_its_own_way_on_not_the_python_clients(daemon, capsys):
    """`sessiond add` whose append met the same end printed the Python client's "send it again with
    idempotency_key=...", which no command takes (each run makes a new key): the CLI says to check what was
    done before running the command again, in its own words; still exit 3 (no daemon), as JSON with --json."""
    import argparse
    import json

    from sessiond.cli.errors import EXIT_NO_DAEMON, run_command

    sid = daemon.client().create_session(name="s")["id"]
    proxy = GoneAfterCommit(daemon.socket)

    def add(args) -> None:
        with Client(daemon.home, socket=proxy.path, timeout=10) as c:
            proxy.armed.set()
            c.append(sid, "user", "lost answer")

    try:
        code = run_command(add, argparse.Namespace(home=daemon.home, json=True))
    finally:
        proxy.close()
    said = json.loads(capsys.readouterr().out)["error"]
    assert code == EXIT_NO_DAEMON and said["code"] == "daemon_not_running", said
    assert "may or may not have been done" in said["message"] and "idempotency_key" not in said["message"], said
    assert "before running it again" in said["message"], said
