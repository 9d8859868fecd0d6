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

from conftest import imported_back, openai_app, run_cli, wait_for
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
# an answer whose usage counts no message can hold (tokens: 0 to 2^40, as the API and every device take them)
HUGE_USAGE = {
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "fine"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 1 << 41, "completion_tokens": 1 << 41, "total_tokens": 1 << 42},
}
# a stream event per mode, after a first good one: JSON, but not an object
EVENTS = {"event_int": b"5", "event_list": b"[1, 2]", "event_text": b'"x"', "event_null": b"null"}


def garbage_provider() -> web.Application:
    """An OpenAI-shaped provider whose answer is garbage in the way its base URL's first part says."""

    async def completions(request: web.Request) -> web.StreamResponse:
        mode = request.match_info["mode"]
        body = await request.json()
        if not body.get("stream"):
            if mode == "huge_usage":
                return web.json_response(HUGE_USAGE)
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
    modes = [*ANSWERS, *EVENTS, "error_first", "huge_usage"]
    tables = "".join(f'[providers.{m}]\nbase_url = "http://127.0.0.1:{server.port}/{m}/v1"\n' for m in modes)
    with open(os.path.join(d.home, "config.toml"), "w") as f:
        f.write(f'default_provider = "{modes[0]}"\nopenai_listen = "127.0.0.1:0"\n{tables}')
    d.start()
    yield d
    server.stop()


def history(c, sid):
    return [(m["role"], m["content"]) for m in c.messages(sid, limit=100)["messages"]]


# a stream's garbage event (after a first good one) and a JSON answer with no answer in it, mode by mode
CASES = [pytest.param(True, m, id=m) for m in EVENTS] + [pytest.param(False, m, id=m) for m in ANSWERS]


@pytest.mark.parametrize(("stream", "mode"), CASES)
def test_garbage_from_the_provider_is_one_clear_error_and_only_what_arrived_is_kept(garbage, stream, mode):
    d = garbage
    c = d.client()
    sid = c.create_session(model="m")["id"]
    code = "provider_failed" if mode == "error_200" else "provider_bad_answer"
    says = "the model is overloaded" if mode == "error_200" else "not a JSON object" if stream else ""
    # what arrived of a stream before the garbage, recorded once, marked interrupted; never an empty answer
    kept = [("assistant", "part one")] if stream else []
    with pytest.raises(ApiError) as e:
        if stream:
            "".join(c.complete_stream(sid, "question", provider=mode))
        else:
            c.complete(sid, "question", provider=mode)
    assert (e.value.code, e.value.status) == (code, 502), e.value.message
    assert f"provider {mode!r}" in e.value.message and says in e.value.message, e.value.message
    assert history(c, sid) == [("user", "question"), *kept]  # the question stays
    if stream:
        [a] = [m for m in c.messages(sid)["messages"] if m["role"] == "assistant"]
        assert a["interrupted"] is True and a["error"] == "provider_bad_answer"
        assert e.value.details["message"]["id"] == a["id"]
    # the OpenAI endpoint: the SDK's own error (a stream's error event; OpenAI's error shape for a whole
    # answer, not a 500 or a 200 with no answer), and the same kept
    sid2 = c.create_session(model="m", settings={"provider": mode})["id"]
    with pytest.raises(openai.APIError) as oe:
        answer = openai_app(d, sid2).chat.completions.create(
            model="m", messages=[{"role": "user", "content": "q"}], stream=stream
        )
        if stream:
            list(answer)
    assert says in oe.value.message, oe.value.message
    if not stream:
        assert isinstance(oe.value, openai.APIStatusError) and (oe.value.status_code, oe.value.code) == (502, code)
        assert f"provider {mode!r}" in oe.value.message
    # the app may see the stream's error before the daemon has stored what arrived: wait for it
    wait_for(lambda: history(c, sid2) == [("user", "q"), *kept], timeout=20, what="the session as the app saw it")


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
    with pytest.raises(openai.APIStatusError) as oe:
        app = openai_app(d, sid)
        list(app.chat.completions.create(model="m", messages=[{"role": "user", "content": "q"}], stream=True))
    assert oe.value.status_code == 502 and oe.value.code == "provider_failed", oe.value


def test_a_provider_s_usage_past_what_a_message_holds_is_not_taken(garbage, tmp_path):
    """A provider's usage counts were taken as they came, whatever their size: an answer's completion_tokens
    became its message's tokens, 2^41 here, past what the API and every device take (0 to 2^40). The answer
    was kept here, and every other device refused this device's log at it (its pulled log is checked as the
    API checks an append); this device's own export no longer imported. Counts past that bound are not
    taken now: the answer is recorded with its tokens estimated, as when a provider sends no usage."""
    c = garbage.client()
    sid = c.create_session(model="m")["id"]
    answer = c.complete(sid, "question", provider="huge_usage")
    assert answer["content"] == "fine" and answer["tokens"] <= 1 << 40, answer
    [kept] = [m for m in c.messages(sid)["messages"] if m["role"] == "assistant"]
    assert kept["tokens"] <= 1 << 40 and "usage" not in kept, kept
    imported_back(garbage.home, sid, tmp_path)
