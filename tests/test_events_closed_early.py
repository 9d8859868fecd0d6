"""AsyncClient.close() (an app shutting down) while its events() or event_stream() waits for the daemon's first
answer (the stream's head; a busy daemon, or one on a slow proxy): aiohttp's connection closed under it, aiohttp
sent the GET again on the session close() had closed, and the app got aiohttp's bare AssertionError (or, closed
another way, "the connection broke ...; the request may or may not have been done" for a read, which changes
nothing). It raises a ClientError now that says what is true: close() was called, the stream was closed, nothing
was changed. So does a stream whose connection broke before the daemon's first answer, in either client (it said
"the request may or may not have been done" too)."""

from __future__ import annotations

import asyncio
import socket
import threading

import pytest

from sessiond.client import AsyncClient, Client, ClientError
from unixproxy import UnixProxy
from waiting import eventually


class HeldAnswers(UnixProxy):
    """In front of a daemon: the app's requests passed on, the daemon's answers held (never passed on): a daemon
    that has not answered yet. `asked` is set once a request has reached the daemon."""

    def __init__(self, upstream: str):
        self.asked = threading.Event()
        self.held: list[socket.socket] = []
        super().__init__(upstream)

    def handle(self, app: socket.socket, daemon: socket.socket) -> None:
        self.held += [app, daemon]

        def pipe() -> None:
            try:
                while data := app.recv(65536):
                    daemon.sendall(data)
                    self.asked.set()
            except OSError:
                pass

        threading.Thread(target=pipe, daemon=True).start()

    def close(self) -> None:
        super().close()
        for s in self.held:
            s.close()


@pytest.mark.parametrize("how", ["events", "event_stream"])
async def test_close_while_events_wait_for_their_first_answer_says_nothing_was_changed(daemon, how):
    proxy = HeldAnswers(daemon.socket)
    try:
        ac = daemon.aclient()
        ac.socket = proxy.path
        subscribing = asyncio.ensure_future(getattr(ac, how)())  # (events() is awaited, event_stream() a coroutine)
        await eventually(proxy.asked.is_set, what="the GET /v1/events on its way to the daemon")
        await ac.close()
        with pytest.raises(ClientError) as closed:
            await asyncio.wait_for(subscribing, 10)
    finally:
        proxy.close()
    said = str(closed.value)
    assert "close() was called during GET /v1/events" in said and "nothing was changed" in said, said
    assert "may or may not" not in said and not closed.value.done_unknown, said
    assert ac._session is None and ac._events_session is None  # nothing opened after close()


class CutBeforeAnswer(HeldAnswers):
    """In front of a daemon: each request passed on, then both connections cut before the daemon's answer (a
    daemon stopped, or a proxy's connection dropped, between the request and its answer)."""

    def handle(self, app: socket.socket, daemon: socket.socket) -> None:
        def pipe() -> None:
            try:
                daemon.sendall(app.recv(65536))
                self.asked.set()
            except OSError:
                pass
            for s in (app, daemon):
                s.shutdown(socket.SHUT_RDWR)
                s.close()

        threading.Thread(target=pipe, daemon=True).start()


@pytest.mark.parametrize("client", ["blocking", "async"])
async def test_a_stream_cut_before_its_first_answer_says_nothing_was_changed(daemon, client):
    """The connection of event_stream() broken before the daemon's answer: "the request may or may not have been
    done", done_unknown, for a read, which changes nothing. It says that nothing was changed now."""
    proxy = CutBeforeAnswer(daemon.socket)
    try:
        with pytest.raises(ClientError) as cut:
            if client == "blocking":
                await asyncio.to_thread(lambda: Client(daemon.home, socket=proxy.path).event_stream())
            else:
                async with AsyncClient(daemon.home, socket=proxy.path) as ac:
                    await ac.event_stream()
    finally:
        proxy.close()
    said = str(cut.value)
    assert "broke before it answered GET /v1/events" in said and "nothing was changed" in said, said
    assert "may or may not" not in said and not cut.value.done_unknown, said
