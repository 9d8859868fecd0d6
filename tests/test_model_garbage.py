"""A provider that answers garbage: a stream event that is JSON but not an object, a JSON answer with
no answer in it (no choices, choices of the wrong shape, an error object sent with status 200). Each is
one clear error (provider_bad_answer, or the provider's failure), the question stays recorded, what
arrived of a stream before the garbage is recorded once, marked interrupted, and nothing is recorded
as an empty answer: through `sessiond ask`, POST /v1/sessions/{id}/complete and the OpenAI endpoint."""

from __future__ import annotations

import json
import os

import openai
import pytest
from aiohttp import web

from conftest import cli_json, run_cli, wait_for
from servers.s5portal import Threaded
from sessiond.client import ApiError

# a JSON answer (stream: false) per mode: none of them holds an answer
ANSWERS = {
    "no_choices": {"id": "chatcmpl-1", "object": "chat.completion"},
    "choices_text": {"choices": "abc"},
    "choice_text": {"choices": ["abc"]},
    "message_text": {"choices": [{"index": 0, "message": "hi", "finish_reason": "stop"}]},
    "error_200": {"error": {"message": "the model is overloaded", "type": "server_error"}},
}
# a stream event per mode, after a first good one: JSON, but not an object
EVENTS = {"event_int": b"5", "event_list": b"[1, 2]", "event_text": b'"x"', "event_null": b"null"}


def garbage_provider() -> web.Application:
    """An OpenAI-shaped provider whose answer is garbage in the way its base URL's first part says."""

    async def completions(request: web.Request) -> web.StreamResponse:
        mode = request.match_info["mode"]
        body = await request.json()
        if not body.get("stream"):
            return web.json_response(ANSWERS.get(mode, {"choices": [{"message": {"content": "fine"}}]}))
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        if mode == "error_first":  # the provider fails before any of the answer, on a stream it opened
            await resp.write(b'data: {"error": {"message": "upstream overloaded", "code": 502}}\n\n')
            await resp.write_eof()
            return resp
        first = {"choices": [{"index": 0, "delta": {"role": "assistant", "content": "part one"}}]}
        await resp.write(b"data: " + json.dumps(first).encode() + b"\n\n")
        await resp.write(b"data: " + EVENTS.get(mode, b'{"choices": []}') + b"\n\n")
        await resp.write(b'data: {"choices": [{"index": 0, "delta": {"content": ", part two"}}]}\n\n')
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_post("/{mode}/v1/chat/completions", completions)
    return app


@pytest.fixture
def garbage(make_daemon):
    """A daemon with one provider per mode (named after it, default_provider the first), and its
    OpenAI endpoint on a TCP port."""
    server = Threaded(garbage_provider()).start()
    d = make_daemon()
    os.makedirs(d.home, mode=0o700)
    modes = [*ANSWERS, *EVENTS, "error_first"]
    tables = "".join(f'[providers.{m}]\nbase_url = "http://127.0.0.1:{server.port}/{m}/v1"\n' for m in modes)
    with open(os.path.join(d.home, "config.toml"), "w") as f:
        f.write(f'default_provider = "{modes[0]}"\nopenai_listen = "127.0.0.1:0"\n{tables}')
    d.start()
    yield d
    server.stop()


def history(c, sid):
    return [(m["role"], m["content"]) for m in c.messages(sid, limit=100)["messages"]]


@pytest.mark.parametrize("mode", list(EVENTS))
def test_a_stream_event_that_is_not_an_object_is_a_bad_answer_and_what_arrived_is_kept(garbage, mode):
    d = garbage
    c = d.client()
    sid = c.create_session(model="m")["id"]
    with pytest.raises(ApiError) as e:
        "".join(c.complete_stream(sid, "question", provider=mode))
    assert e.value.code == "provider_bad_answer" and e.value.status == 502, e.value.message
    assert f"provider {mode!r}" in e.value.message and "not a JSON object" in e.value.message
    [a] = [m for m in c.messages(sid)["messages"] if m["role"] == "assistant"]
    assert a["content"] == "part one" and a["interrupted"] is True and a["error"] == "provider_bad_answer"
    assert e.value.details["message"]["id"] == a["id"]
    assert history(c, sid) == [("user", "question"), ("assistant", "part one")]
    # the OpenAI endpoint: the app gets the error event; what arrived is recorded once
    info = cli_json(d.home, "status")["openai"]
    key = open(info["api_key_file"]).read().strip()
    sid2 = c.create_session(model="m", settings={"provider": mode})["id"]
    app = openai.OpenAI(
        base_url=info["base_url"], api_key=key, max_retries=0, default_headers={"X-Sessiond-Session": sid2}
    )
    with pytest.raises(openai.APIError) as oe:
        list(app.chat.completions.create(model="m", messages=[{"role": "user", "content": "q"}], stream=True))
    assert "not a JSON object" in oe.value.message
    wait_for(lambda: len(history(c, sid2)) == 2, timeout=20, what="the interrupted answer stored")
    assert history(c, sid2) == [("user", "q"), ("assistant", "part one")]


@pytest.mark.parametrize("mode", list(ANSWERS))
def test_a_json_answer_with_no_answer_in_it_is_an_error_not_an_empty_answer(garbage, mode):
    d = garbage
    c = d.client()
    sid = c.create_session(model="m")["id"]
    code = "provider_failed" if mode == "error_200" else "provider_bad_answer"
    with pytest.raises(ApiError) as e:
        c.complete(sid, "question", provider=mode)
    assert (e.value.code, e.value.status) == (code, 502), e.value.message
    assert f"provider {mode!r}" in e.value.message
    if mode == "error_200":
        assert "the model is overloaded" in e.value.message
    assert history(c, sid) == [("user", "question")]  # the question stays; no empty answer
    # the OpenAI endpoint: OpenAI's error shape (the SDK's own error), not a 500 or a 200 with no answer
    info = cli_json(d.home, "status")["openai"]
    key = open(info["api_key_file"]).read().strip()
    sid2 = c.create_session(model="m", settings={"provider": mode})["id"]
    app = openai.OpenAI(
        base_url=info["base_url"], api_key=key, max_retries=0, default_headers={"X-Sessiond-Session": sid2}
    )
    with pytest.raises(openai.APIStatusError) as oe:
        app.chat.completions.create(model="m", messages=[{"role": "user", "content": "q"}])
    assert oe.value.status_code == 502 and oe.value.code == code, oe.value
    assert f"provider {mode!r}" in oe.value.message
    assert history(c, sid2) == [("user", "q")]


def test_a_stream_whose_first_event_is_an_error_is_the_providers_failure_not_a_cut_answer(garbage):
    d = garbage
    c = d.client()
    sid = c.create_session(model="m", settings={"provider": "error_first"})["id"]
    with pytest.raises(ApiError) as e:
        "".join(c.complete_stream(sid, "question"))
    assert (e.value.code, e.value.status) == ("provider_failed", 502), e.value.message
    assert "upstream overloaded" in e.value.message and "cut the answer off" not in e.value.message
    assert history(c, sid) == [("user", "question")]  # nothing arrived: nothing recorded as an answer
    res = run_cli(d.home, "ask", sid, "again")
    assert res.returncode == 1 and "upstream overloaded" in res.stderr and "cut the answer" not in res.stderr
    # the OpenAI endpoint: nothing was said yet, so an error answer of its own (the SDK's error)
    info = cli_json(d.home, "status")["openai"]
    key = open(info["api_key_file"]).read().strip()
    app = openai.OpenAI(
        base_url=info["base_url"], api_key=key, max_retries=0, default_headers={"X-Sessiond-Session": sid}
    )
    with pytest.raises(openai.APIStatusError) as oe:
        list(app.chat.completions.create(model="m", messages=[{"role": "user", "content": "q"}], stream=True))
    assert oe.value.status_code == 502 and oe.value.code == "provider_failed", oe.value
