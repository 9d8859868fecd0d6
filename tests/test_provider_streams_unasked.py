"""A provider that streams an answer asked for whole: to a request with `stream: false` it answers with an
event stream (`data: {...}` lines, text/event-stream), as some OpenAI-compatible servers and proxies do. It
was refused as provider_bad_answer ("answered with something that is not JSON: b'data: ...'"), and its
answer, paid for, lost. Now the stream's chunks are put together into the whole answer (its text, its tool
calls, its usage): returned and recorded whole. (The reverse, a whole answer to a streamed request:
tests/test_provider_not_streaming.py.)"""

from __future__ import annotations

import json

import pytest
from aiohttp import web

from conftest import openai_app, started_with_provider
from servers.s5portal import Threaded
from sessiond.client import ApiError

CALL = {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": '{"q": "x"}'}}


def streaming_provider() -> web.Application:
    """Streams whatever it is asked; its base URL's first part says what: text, a tool call, nothing."""

    async def completions(request: web.Request) -> web.StreamResponse:
        mode = request.match_info["mode"]
        body = await request.json()
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        head = {"id": "chatcmpl-9", "object": "chat.completion.chunk", "model": body["model"]}
        events = [{"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}]
        if mode == "text":
            events += [{"choices": [{"index": 0, "delta": {"content": w}}]} for w in ("the ", "whole ", "answer")]
            events.append({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        elif mode == "call":
            a, b = CALL["function"]["arguments"][:5], CALL["function"]["arguments"][5:]
            first = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": a}}
            events.append({"choices": [{"index": 0, "delta": {"tool_calls": [first]}}]})
            events.append(
                {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": b}}]}}]}
            )
            events.append({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]})
        if mode != "empty":
            events.append({"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}})
            for ev in events:
                await resp.write(b"data: " + json.dumps({**head, **ev}).encode() + b"\n\n")
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_post("/{mode}/v1/chat/completions", completions)
    return app


@pytest.fixture
def streaming(make_daemon):
    server = Threaded(streaming_provider()).start()
    d = started_with_provider(
        make_daemon, f"http://127.0.0.1:{server.port}/text/v1", name="p", openai_listen="127.0.0.1:0"
    )
    yield d, server.port
    server.stop()


def test_a_stream_answering_a_question_asked_whole_is_put_together_and_recorded(streaming):
    d, _ = streaming
    c = d.client()
    sid = c.create_session(model="m")["id"]
    answer = c.complete(sid, "q")
    assert answer["content"] == "the whole answer", answer
    [a] = [m for m in c.messages(sid)["messages"] if m["role"] == "assistant"]
    assert a["content"] == "the whole answer" and not a.get("interrupted") and not a.get("error")
    assert a["usage"] == {"prompt_tokens": 5, "completion_tokens": 3}
    # an OpenAI app's request made whole: a chat.completion, its message and usage
    app = openai_app(d, sid)
    got = app.chat.completions.create(model="m", messages=[{"role": "user", "content": "q2"}])
    assert got.choices[0].message.content == "the whole answer" and got.choices[0].finish_reason == "stop"
    assert got.usage.prompt_tokens == 5 and got.usage.completion_tokens == 3


def test_a_stream_s_tool_call_is_put_together(make_daemon, streaming):
    _, port = streaming
    d = started_with_provider(make_daemon, f"http://127.0.0.1:{port}/call/v1", name="p", openai_listen="127.0.0.1:0")
    c = d.client()
    sid = c.create_session(model="m")["id"]
    c.complete(sid, "q")
    last = c.messages(sid)["messages"][-1]
    assert last["role"] == "assistant" and last["tool_calls"] == [CALL] and not last.get("interrupted"), last
    app = openai_app(d, sid)
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    got = app.chat.completions.create(model="m", messages=[{"role": "user", "content": "q2"}], tools=tools)
    [call] = got.choices[0].message.tool_calls
    assert (call.id, call.function.name, call.function.arguments) == ("call_1", "lookup", '{"q": "x"}')
    assert got.choices[0].finish_reason == "tool_calls"


def test_a_stream_of_no_chunk_is_a_bad_answer_not_an_empty_one(make_daemon, streaming):
    _, port = streaming
    d = started_with_provider(make_daemon, f"http://127.0.0.1:{port}/empty/v1", name="p")
    c = d.client()
    sid = c.create_session(model="m")["id"]
    with pytest.raises(ApiError) as e:
        c.complete(sid, "q")
    assert (e.value.code, e.value.status) == ("provider_bad_answer", 502), e.value.message
    assert [m["role"] for m in c.messages(sid)["messages"]] == ["user"]
