"""A provider whose answer is far too large to keep: more text than one message holds (MAX_TEXT characters),
whole or streamed, or a body past what the daemon reads of a whole answer. It was all read into memory and
recorded: a message past the limit every other way in refuses (its session's export could not be imported
again), and a provider that never stopped grew the daemon without bound. Now the reading stops at the limit,
the generation is stopped, the error is `provider_answer_too_large`, and a stream's part that reached the app
is what is recorded, marked interrupted."""

from __future__ import annotations

import json

import openai
import pytest
from aiohttp import web

from conftest import openai_app, started_with_provider, wait_for
from servers.s5portal import Threaded
from sessiond.api.types import MAX_TEXT
from sessiond.client import ApiError

PIECE = 1 << 16  # characters a streamed chunk adds
PAST = 2 * MAX_TEXT  # what the provider sends at most: past the limit, never endless if it is not heeded


def huge_provider(seen: dict) -> web.Application:
    """An OpenAI-shaped provider whose answers go on past MAX_TEXT: a whole one of PAST characters (mode
    `text`), or of MAX_TEXT characters and a body padded past any answer's size (`padded`); a stream of
    PIECE-character chunks until the client goes away (PAST at most). `seen["stopped"]`: a stream's client
    went away before its end."""

    async def completions(request: web.Request) -> web.StreamResponse:
        mode = request.match_info["mode"]
        body = await request.json()
        if not body.get("stream"):
            resp = web.StreamResponse(headers={"Content-Type": "application/json"})
            await resp.prepare(request)
            n = PAST if mode == "text" else MAX_TEXT
            await resp.write(b'{"choices": [{"index": 0, "message": {"role": "assistant", "content": "')
            for _ in range(n // PIECE):
                await resp.write(b"x" * PIECE)
            await resp.write(b'"}, "finish_reason": "stop"}]')
            try:
                for _ in range(PAST * 8 // PIECE if mode == "padded" else 0):
                    await resp.write(b" " * PIECE)
                await resp.write(b"}")
                await resp.write_eof()
            except ConnectionError:
                seen["stopped"] = True
            return resp
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        chunk = {"choices": [{"index": 0, "delta": {"content": "x" * PIECE}}]}
        line = b"data: " + json.dumps(chunk).encode() + b"\n\n"
        try:
            for _ in range(PAST // PIECE):
                await resp.write(line)
            await resp.write(b"data: [DONE]\n\n")
            await resp.write_eof()
        except ConnectionError:
            seen["stopped"] = True
        return resp

    app = web.Application()
    app.router.add_post("/{mode}/v1/chat/completions", completions)
    return app


@pytest.fixture
def huge(make_daemon):
    seen: dict = {}
    server = Threaded(huge_provider(seen)).start()
    url = f"http://127.0.0.1:{server.port}"
    d = started_with_provider(
        make_daemon, f"{url}/text/v1", name="text", openai_listen="127.0.0.1:0", default_provider="text", start=False
    )
    with open(f"{d.home}/config.toml", "a") as f:
        f.write(f'[providers.padded]\nbase_url = "{url}/padded/v1"\n')
    d.start()
    yield d, seen
    server.stop()


def lengths(c, sid) -> list:
    return [(m["role"], len(m["content"]), m.get("interrupted"), m.get("error")) for m in c.messages(sid)["messages"]]


def test_a_whole_answer_past_what_a_message_holds_is_refused_and_the_question_stays(huge):
    d, _ = huge
    c = d.client()
    sid = c.create_session(model="m")["id"]
    with pytest.raises(ApiError) as e:
        c.complete(sid, "q")
    assert (e.value.code, e.value.status) == ("provider_answer_too_large", 502), e.value.message
    assert "provider 'text'" in e.value.message and f"{MAX_TEXT:,}" in e.value.message, e.value.message
    assert lengths(c, sid) == [("user", 1, None, None)]
    # an OpenAI app: its SDK's error of that status and code, nothing more recorded
    with pytest.raises(openai.APIStatusError) as oe:
        openai_app(d, sid).chat.completions.create(model="m", messages=[{"role": "user", "content": "q2"}])
    assert (oe.value.status_code, oe.value.code) == (502, "provider_answer_too_large"), oe.value.message
    assert oe.value.response.headers.get("x-should-retry") == "false"  # a retry would only generate it again
    assert lengths(c, sid) == [("user", 1, None, None), ("user", 2, None, None)]


def test_a_whole_answer_s_body_is_read_only_so_far(huge):
    d, seen = huge
    c = d.client()
    sid = c.create_session(model="m")["id"]
    with pytest.raises(ApiError) as e:
        c.complete(sid, "q", provider="padded")
    assert (e.value.code, e.value.status) == ("provider_answer_too_large", 502), e.value.message
    assert "MiB" in e.value.message, e.value.message
    wait_for(lambda: seen.get("stopped"), timeout=20, what="the provider's answer stopped")
    assert lengths(c, sid) == [("user", 1, None, None)]


def test_a_streamed_answer_stops_at_what_a_message_holds_and_that_part_is_recorded(huge):
    d, seen = huge
    c = d.client()
    sid = c.create_session(model="m")["id"]
    got: list[str] = []
    with pytest.raises(ApiError) as e:
        for piece in c.complete_stream(sid, "q"):
            got.append(piece)
    assert (e.value.code, e.value.status) == ("provider_answer_too_large", 502), e.value.message
    assert f"{MAX_TEXT:,}" in e.value.message and "interrupted" in e.value.message, e.value.message
    wait_for(lambda: seen.get("stopped"), timeout=20, what="the provider's stream stopped")
    n = len("".join(got))
    assert MAX_TEXT - PIECE < n <= MAX_TEXT
    # what reached the app is what is recorded, marked; and the session's export can be imported again
    assert lengths(c, sid) == [("user", 1, None, None), ("assistant", n, True, "provider_answer_too_large")]
    exported = dict(c.export(sid))
    exported["session"] = {k: v for k, v in exported["session"].items() if k != "id"}
    assert c.import_file(exported)["sessions"]
    # an OpenAI app's stream: the SDK raises the error event, what it was given recorded the same way
    seen.clear()
    sid2 = c.create_session(model="m")["id"]
    text = ""
    with pytest.raises(openai.APIError) as oe:
        for ch in openai_app(d, sid2).chat.completions.create(
            model="m", messages=[{"role": "user", "content": "q"}], stream=True
        ):
            text += ch.choices[0].delta.content or "" if ch.choices else ""
    assert f"{MAX_TEXT:,}" in oe.value.message, oe.value.message
    assert MAX_TEXT - PIECE < len(text) <= MAX_TEXT
    wait_for(
        lambda: (
            lengths(c, sid2) == [("user", 1, None, None), ("assistant", len(text), True, "provider_answer_too_large")]
        ),
        timeout=20,
        what="the streamed part recorded",
    )
