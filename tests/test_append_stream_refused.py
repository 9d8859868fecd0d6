"""A daemon refusing the append stream's WebSocket handshake (a 503 database_lost, a 401: any answer but 101,
and but the 404/405 of a daemon without the stream): the blocking client raised the daemon's ApiError, read
from the refusal's body; the async client a bare ClientError("the daemon refused the append stream (HTTP
503)"), no ApiError, no status, though aiohttp's handshake error gives the status and headers (not the body,
which it does not read). It now raises an ApiError of that status, saying that the stream was refused, that
nothing was appended, and how to have the daemon's reason (the same append by POST)."""

from __future__ import annotations

import pytest
from aiohttp import web

from sessiond.client import ApiError, AsyncClient, Client
from test_append_stream import posted, served_on_a_socket

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


async def test_the_async_client_raises_an_api_error_for_a_refused_stream(refusing_daemon, home):
    path, seen, status = refusing_daemon
    async with AsyncClient(home, socket=path) as c:
        await c.append("s1", "user", "posted", idempotency_key="k1")
        with pytest.raises(ApiError) as refused:
            await c.append("s1", "user", "streamed", idempotency_key="k2")
    said = refused.value.message
    assert refused.value.status == status and f"HTTP {status}" in said and "refused the append stream" in said
    assert refused.value.done_unknown is False and "append_stream=False" in said  # (the POST gets the reason)
    assert seen == ["POST s1 k1", "GET /v1/appends"]  # the append was not sent another way
