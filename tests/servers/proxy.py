"""A loopback reverse proxy in front of a server (a relay), for the mistakes a real one makes: it may not
pass on the Host header the client connected with (nginx's default sends its upstream's address), and it
may answer some requests itself (a 502 when its upstream fails). Serve it with s5portal's Running or
Threaded."""

from __future__ import annotations

from collections.abc import Callable

import aiohttp
from aiohttp import web

HOP = {"host", "content-length", "transfer-encoding", "connection"}


def make_proxy(
    upstream_port: int, *, pass_host: bool = False, answer: Callable[[web.Request], int | None] = lambda r: None
) -> web.Application:
    """Forward every request to 127.0.0.1:`upstream_port`; `answer(request)`: a status the proxy answers
    itself instead (None: forwarded)."""
    sessions: list[aiohttp.ClientSession] = []

    async def forward(request: web.Request) -> web.Response:
        status = answer(request)
        if status is not None:
            return web.Response(status=status, text=f"{status} from the proxy")
        if not sessions:
            sessions.append(aiohttp.ClientSession(auto_decompress=False))
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP}
        if pass_host:
            headers["Host"] = request.host
        async with sessions[0].request(
            request.method,
            f"http://127.0.0.1:{upstream_port}{request.path_qs}",
            headers=headers,
            data=await request.read(),
            allow_redirects=False,
        ) as r:
            body = await r.read()
            kept = {k: v for k, v in r.headers.items() if k.lower() not in HOP}
            return web.Response(status=r.status, body=body, headers=kept)

    async def close(_app: web.Application) -> None:
        for s in sessions:
            await s.close()

    app = web.Application(client_max_size=8 << 20)
    app.router.add_route("*", "/{tail:.*}", forward)
    app.on_cleanup.append(close)
    return app
