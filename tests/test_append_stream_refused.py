"""A daemon refusing the append stream's WebSocket handshake (a 503 database_lost, a 401: any answer but 101,
and but the 404/405 of a daemon without the stream): the blocking client raised the daemon's ApiError, read
from the refusal's body; the async client a bare ClientError("the daemon refused the append stream (HTTP
503)"), no ApiError, no status, though aiohttp's handshake error gives the status and headers (not the body,
which it does not read). It now raises an ApiError of that status, saying that the stream was refused, that
nothing was appended, and how to have the daemon's reason (the same append by POST).

That still said `http_error`, not the daemon's code and message, which the blocking client says: the async
client now reads the refusal's body too (its trace of the handshake, before aiohttp raises its error), and raises
the daemon's ApiError, as the blocking client does."""

from __future__ import annotations

import socket
import threading

import pytest
from aiohttp import web

from sessiond.client import ApiError, AsyncClient, Client
from test_append_stream import posted, served_on_a_socket
from unixproxy import UnixProxy, pipe

LOST = "the database was lost: stop the daemon"


@pytest.fixture(params=[(503, "database_lost"), (401, "unauthorized")])
def refusing_daemon(request):
    """A daemon that takes POSTed appends and refuses every append stream's handshake with `status` and its
    JSON error body (`code`)."""
    status, code = request.param
    seen: list[str] = []

    async def appends(req: web.Request) -> web.Response:
        seen.append(f"GET {req.path}")
        return web.json_response({"error": {"code": code, "message": LOST}}, status=status)

    def route(app: web.Application) -> None:
        app.router.add_post("/v1/sessions/{id}/messages", posted(seen))
        app.router.add_get("/v1/appends", appends)

    with served_on_a_socket(route) as path:
        yield path, seen, status


def test_the_blocking_client_raises_the_daemons_refusal_of_the_stream(refusing_daemon, home):
    path, _, status = refusing_daemon
    with Client(home, socket=path) as c:
        c.append("s1", "user", "posted", idempotency_key="k1")
        with pytest.raises(ApiError) as refused:
            c.append("s1", "user", "streamed", idempotency_key="k2")
    assert refused.value.status == status and refused.value.message == LOST
    assert refused.value.done_unknown is False  # (not sent: no key to send it again with)


async def test_the_async_client_raises_the_daemons_refusal_of_the_stream(refusing_daemon, home):
    path, seen, status = refusing_daemon
    async with AsyncClient(home, socket=path) as c:
        await c.append("s1", "user", "posted", idempotency_key="k1")
        with pytest.raises(ApiError) as refused:
            await c.append("s1", "user", "streamed", idempotency_key="k2")
    code = {503: "database_lost", 401: "unauthorized"}[status]
    assert (refused.value.status, refused.value.code, refused.value.message) == (status, code, LOST)
    assert refused.value.done_unknown is False
    assert seen == ["POST s1 k1", "GET /v1/appends"]  # the append was not sent another way


async def test_a_refusal_with_no_error_body_still_says_the_stream_was_refused(home):
    """A refusal whose body is not the API's error (another program's, a proxy's): its status, and how to have
    the daemon's reason."""
    seen: list[str] = []

    async def appends(req: web.Request) -> web.Response:
        return web.Response(status=502, text="")

    def route(app: web.Application) -> None:
        app.router.add_post("/v1/sessions/{id}/messages", posted(seen))
        app.router.add_get("/v1/appends", appends)

    with served_on_a_socket(route) as path:
        async with AsyncClient(home, socket=path) as c:
            await c.append("s1", "user", "posted", idempotency_key="k1")
            with pytest.raises(ApiError) as refused:
                await c.append("s1", "user", "streamed", idempotency_key="k2")
    said = refused.value.message
    assert refused.value.status == 502 and "refused the append stream (HTTP 502)" in said
    assert "append_stream=False" in said and refused.value.done_unknown is False


class OtherWebSocketVersion(UnixProxy):
    """In front of a real daemon: every request passed on with its WebSocket version changed (13 to 99), as an
    app of another WebSocket version would ask, which the daemon refuses (400 bad_frame, saying what it takes)."""

    def handle(self, app: socket.socket, daemon: socket.socket) -> None:
        def other_version(data: bytes) -> bytes:
            return data.replace(b"Sec-WebSocket-Version: 13", b"Sec-WebSocket-Version: 99")

        threading.Thread(target=pipe, args=(app, daemon, other_version), daemon=True).start()
        threading.Thread(target=pipe, args=(daemon, app), daemon=True).start()


async def test_a_real_daemons_refusal_of_the_handshake_is_its_own_code_and_message(daemon):
    sid = daemon.client().create_session(name="s")["id"]
    proxy = OtherWebSocketVersion(daemon.socket)
    try:
        with Client(daemon.home, socket=proxy.path) as c:
            c.append(sid, "user", "posted")
            with pytest.raises(ApiError) as blocking:
                c.append(sid, "user", "streamed")
        async with AsyncClient(daemon.home, socket=proxy.path) as ac:
            await ac.append(sid, "user", "posted")
            with pytest.raises(ApiError) as refused:
                await ac.append(sid, "user", "streamed")
    finally:
        proxy.close()
    assert (blocking.value.status, blocking.value.code) == (400, "bad_frame")
    assert "Sec-WebSocket-Version: 13" in blocking.value.message  # what the daemon takes
    # the async client says what the blocking one says: the daemon's own refusal
    assert (refused.value.status, refused.value.code, refused.value.message) == (
        blocking.value.status,
        blocking.value.code,
        blocking.value.message,
    )
    assert refused.value.done_unknown is False
    assert [m["content"] for m in daemon.client().messages(sid)["messages"]] == ["posted", "posted"]
