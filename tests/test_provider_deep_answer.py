"""A provider's answer nested deeper than Python's JSON reader goes (a proxy's or a broken server's thousands of
brackets) was a 500, "internal error", where an answer that is not JSON is the README's provider_bad_answer
(502) naming what came, and a refusal's body its words: the reader's RecursionError went up. Each is read as
the JSON it cannot be: a whole answer and a stream's event are provider_bad_answer, a refusal keeps its status
(the body shown as text)."""

from __future__ import annotations

import pytest
from aiohttp import web

from conftest import started_with_provider
from servers.s5portal import Threaded
from sessiond.client import ApiError

DEEP = b"[" * 5000 + b"]" * 5000


def deep_provider(how: str) -> web.Application:
    async def completions(request: web.Request) -> web.StreamResponse:
        await request.read()
        if how == "refusal":
            return web.Response(status=400, body=DEEP, content_type="application/json")
        if how == "whole":
            return web.Response(body=DEEP, content_type="application/json")
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(b"data: " + DEEP + b"\n\n")
        return resp

    app = web.Application()
    app.router.add_post("/v1/chat/completions", completions)
    return app


@pytest.mark.parametrize("how", ["whole", "stream", "refusal"])
def test_an_answer_too_deep_to_read_is_a_provider_failure_not_a_500(make_daemon, how):
    server = Threaded(deep_provider(how)).start()
    try:
        d = started_with_provider(make_daemon, f"http://127.0.0.1:{server.port}/v1", default_provider="loop")
        c = d.client()
        sid = c.create_session(model="m")["id"]
        with pytest.raises(ApiError) as exc:
            if how == "stream":
                list(c.complete_stream(sid, "hi"))
            else:
                c.complete(sid, "hi")
        err = exc.value
        if how == "refusal":
            assert (err.status, err.code) == (422, "provider_rejected"), err
        else:
            assert (err.status, err.code) == (502, "provider_bad_answer"), err
    finally:
        server.stop()
