"""A provider that does not stream: asked for a stream (`stream: true`), it answers with the whole answer as
one JSON body (application/json), as some OpenAI-compatible servers and proxies do. It was read as a stream
with no events, said as `provider_stream_cut` ("cut the answer off before its end"), which it had not, and
its answer, paid for, was lost. Now the whole answer is the stream's one chunk: passed on, recorded whole."""

from __future__ import annotations

import pytest
from aiohttp import web

from conftest import openai_app, started_with_provider
from servers.s5portal import Threaded
from sessiond.client import ApiError

CALL = {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": '{"q": "x"}'}}


def whole_provider() -> web.Application:
    async def completions(request: web.Request) -> web.Response:
        body = await request.json()
        calls = bool(body.get("tools"))
        message = {"role": "assistant", "content": None if calls else "the whole answer"}
        if calls:
            message["tool_calls"] = [CALL]
        return web.json_response(
            {
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "model": body["model"],
                "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls" if calls else "stop"}],
                "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8},
            }
        )

    app = web.Application()
    app.router.add_post("/v1/chat/completions", completions)
    return app


@pytest.fixture
def whole(make_daemon):
    server = Threaded(whole_provider()).start()
    d = started_with_provider(make_daemon, f"http://127.0.0.1:{server.port}/v1", name="p", openai_listen="127.0.0.1:0")
    yield d
    server.stop()


def test_a_whole_answer_to_a_streamed_question_is_passed_on_and_recorded(whole):
    d = whole
    c = d.client()
    sid = c.create_session(model="m")["id"]
    assert "".join(c.complete_stream(sid, "q")) == "the whole answer"
    [a] = [m for m in c.messages(sid)["messages"] if m["role"] == "assistant"]
    assert a["content"] == "the whole answer" and not a.get("interrupted") and not a.get("error")
    assert a["usage"] == {"prompt_tokens": 5, "completion_tokens": 3}
    # an OpenAI app's stream: one chunk of the whole text, then its end; a tool call with its index
    app = openai_app(d, sid)
    chunks = list(app.chat.completions.create(model="m", messages=[{"role": "user", "content": "q2"}], stream=True))
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == "the whole answer"
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    chunks = list(
        app.chat.completions.create(model="m", messages=[{"role": "user", "content": "q3"}], stream=True, tools=tools)
    )
    [call] = [tc for ch in chunks if ch.choices for tc in ch.choices[0].delta.tool_calls or []]
    assert (call.index, call.id, call.function.name, call.function.arguments) == (0, "call_1", "lookup", '{"q": "x"}')
    last = c.messages(sid)["messages"][-1]
    assert last["tool_calls"] == [CALL] and not last.get("interrupted")


def page_provider() -> web.Application:
    """A proxy's page in the provider's place (a login, a captive portal): 200, text/html, no events."""

    async def completions(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(text="<html><body>Please sign in to the proxy</body></html>\n", content_type="text/html")

    app = web.Application()
    app.router.add_post("/v1/chat/completions", completions)
    return app


def test_a_page_in_place_of_a_stream_is_named_not_called_a_cut_answer(make_daemon):
    # it was provider_stream_cut, "cut the answer off before its end": the user looked for a flaky connection
    server = Threaded(page_provider()).start()
    try:
        d = started_with_provider(make_daemon, f"http://127.0.0.1:{server.port}/v1", name="p")
        c = d.client()
        sid = c.create_session(model="m")["id"]
        with pytest.raises(ApiError) as e:
            "".join(c.complete_stream(sid, "q"))
        assert (e.value.code, e.value.status) == ("provider_bad_answer", 502), e.value.message
        assert "text/html" in e.value.message and "Please sign in" in e.value.message, e.value.message
        assert [m["role"] for m in c.messages(sid)["messages"]] == ["user"]
    finally:
        server.stop()
