"""A turn that fails as the app sees it: a provider's refusals (a 429's Retry-After in each form RFC 9110
allows, or a broken one; another 4xx; a 404 that is no word about a model) through POST
/v1/sessions/{id}/complete and the OpenAI endpoint; and an answer that cannot be recorded at its end."""

from __future__ import annotations

import email.utils
import json
import re
import threading
import time

import openai
import pytest
from aiohttp import web

from conftest import UnixHTTP, openai_app, run_cli, started_with_provider, wait_for
from servers.openai_server import Provider, serve_threaded
from servers.s5portal import Threaded
from sessiond.client import ApiError


def refusing_provider(said: dict) -> web.Application:
    """An OpenAI-shaped provider that answers every completion with said["status"], said["headers"]."""

    async def completions(request: web.Request) -> web.Response:
        await request.read()
        if "text" in said:  # a server that has no such path: its own plain 404 page
            return web.Response(status=said["status"], text=said["text"])
        err = {"message": said.get("message", "slow down"), "type": said.get("type"), "code": said.get("code")}
        return web.json_response({"error": err}, status=said["status"], headers=said.get("headers"))

    app = web.Application()
    app.router.add_post("/v1/chat/completions", completions)
    return app


@pytest.fixture
def refusing(make_daemon):
    said: dict = {"status": 429}
    server = Threaded(refusing_provider(said)).start()
    d = started_with_provider(make_daemon, f"http://127.0.0.1:{server.port}/v1", name="p", openai_listen="127.0.0.1:0")
    sid = d.client().create_session(model="m")["id"]
    yield d, said, sid, openai_app(d, sid)
    server.stop()


def test_a_retry_after_as_an_http_date_is_honoured_and_a_broken_one_is_no_error(refusing):
    d, said, sid, app = refusing
    c = d.client()
    msgs = [{"role": "user", "content": "q"}]
    # an HTTP date, 120 s from now: the seconds until then
    said["headers"] = {"Retry-After": email.utils.formatdate(time.time() + 120, usegmt=True)}
    with pytest.raises(ApiError) as e:
        c.complete(sid, "q")
    assert e.value.code == "provider_rate_limited" and e.value.status == 429
    assert 100 <= e.value.details["retry_after"] <= 121, e.value.details
    assert re.search(r"retry after (1\d\d s|2 minutes)$", e.value.message), e.value.message
    with pytest.raises(openai.RateLimitError) as oe:
        app.chat.completions.create(model="m", messages=msgs)
    assert 100 <= int(oe.value.response.headers["Retry-After"]) <= 121
    # a value that is no number of seconds or date (inf, nan, a word): as if none was given, never a 500
    for value in ("inf", "nan", "1e999", "soon"):
        said["headers"] = {"Retry-After": value}
        with pytest.raises(ApiError) as e:
            c.complete(sid, "q")
        assert (e.value.code, e.value.details.get("retry_after")) == ("provider_rate_limited", None), value
        assert "retry later" in e.value.message
        with pytest.raises(openai.RateLimitError) as oe:
            app.chat.completions.create(model="m", messages=msgs)
        assert "Retry-After" not in oe.value.response.headers, value


def test_a_request_the_provider_refuses_reaches_an_openai_app_with_the_providers_status_and_code(refusing):
    # an app asks too much of the context: OpenAI's 400 context_length_exceeded, which apps catch to trim
    # their history; through sessiond it is still the SDK's BadRequestError with that code
    d, said, sid, app = refusing
    said.update(
        status=400,
        message="This model's maximum context length is 8192 tokens.",
        type="invalid_request_error",
        code="context_length_exceeded",
    )
    with pytest.raises(openai.BadRequestError) as oe:
        app.chat.completions.create(model="m", messages=[{"role": "user", "content": "q"}])
    assert oe.value.status_code == 400 and oe.value.code == "context_length_exceeded", oe.value
    assert "maximum context length" in oe.value.message and "provider 'p'" in oe.value.message
    # the socket API keeps its own code, the provider's status and code in the details
    with pytest.raises(ApiError) as e:
        d.client().complete(sid, "q")
    assert (e.value.status, e.value.code) == (422, "provider_rejected")
    assert e.value.details["provider_status"] == 400 and e.value.details["provider_code"] == "context_length_exceeded"
    # a 4xx with no code of its own: its status, sessiond's code
    said.update(status=413, message="request too large", code=None)
    with pytest.raises(openai.APIStatusError) as oe:
        app.chat.completions.create(model="m", messages=[{"role": "user", "content": "q"}])
    assert oe.value.status_code == 413 and oe.value.code == "provider_rejected", oe.value


def test_a_404_that_is_no_word_about_a_model_names_the_url_not_another_model(refusing):
    # base_url without its /v1 (Ollama's "http://127.0.0.1:11434"): the server's own 404 for a path it
    # does not have; telling the user to choose another model sends them the wrong way
    d, said, sid, app = refusing
    said.update(status=404, text="404 page not found")
    res = run_cli(d.home, "ask", sid, "hi")
    assert res.returncode == 1 and "404 page not found" in res.stderr, res.stderr
    assert "/v1/chat/completions" in res.stderr and "base_url" in res.stderr, res.stderr
    assert "choose another with --model" not in res.stderr, res.stderr
    with pytest.raises(ApiError) as e:
        d.client().complete(sid, "q")
    assert (e.value.code, e.value.status) == ("model_not_found", 404)  # the code stays: a 404 of the provider
    # a 404 that speaks of the model is still that model's absence
    del said["text"]
    said.update(message="The model `m` does not exist or you do not have access to it.", code="model_not_found")
    with pytest.raises(ApiError) as e:
        d.client().complete(sid, "q")
    assert e.value.code == "model_not_found" and "has no model 'm'" in e.value.message, e.value.message


@pytest.mark.parametrize("how", ["end"])
def test_a_streamed_answer_that_cannot_be_recorded_ends_with_that_error_not_a_broken_connection(make_daemon, how):
    # the session is ended while the model answers: the answer has streamed to the app but cannot be stored
    # (the end's final checkpoint stands; a pause meanwhile records it: tests/test_answer_status.py); the
    # app is told so, in the stream's own error event, and nothing half is stored
    p, server = serve_threaded(Provider())
    try:
        d = started_with_provider(make_daemon, f"http://127.0.0.1:{server.port}/v1")
        c = d.client()
        sid = c.create_session(model="echo-1")["id"]
        p.faults.delay = 0.05
        stream = c.complete_stream(sid, " ".join(f"w{i}" for i in range(30)))
        got = []
        with pytest.raises(ApiError) as e:
            for text in stream:
                got.append(text)
                if len(got) == 3:
                    getattr(c, how)(sid)
        assert e.value.status == 409 and "not recorded" in e.value.message, e.value.message
        assert how + "ed" in e.value.message or "paused" in e.value.message, e.value.message
        assert [m["role"] for m in c.messages(sid)["messages"]] == ["user"]
    finally:
        server.stop()


def test_a_whole_answer_that_cannot_be_recorded_reaches_an_openai_app_over_tcp_in_openais_shape(make_daemon):
    # the session is ended while the model thinks: the app on the TCP listener is told, as OpenAI's error
    # (was: a 500 "Internal Server Error" page, the listener having no error handling of its own)
    p, server = serve_threaded(Provider())
    p.faults.hang = 2.0  # the model thinks: time to end the session meanwhile
    try:
        d = started_with_provider(make_daemon, f"http://127.0.0.1:{server.port}/v1", openai_listen="127.0.0.1:0")
        c = d.client()
        sid = c.create_session(model="echo-1")["id"]
        out: list = []

        def ask() -> None:
            try:
                openai_app(d, sid).chat.completions.create(model="echo-1", messages=[{"role": "user", "content": "q"}])
            except openai.APIError as exc:  # what the app is told is the subject
                out.append(exc)

        t = threading.Thread(target=ask)
        t.start()
        wait_for(lambda: c.messages(sid)["messages"], what="the question recorded")
        c.end(sid)
        t.join(timeout=60)
        [e] = out
        assert isinstance(e, openai.APIStatusError) and e.status_code == 400, e  # (not 409: the SDKs retry it)
        assert "answer was not recorded" in e.message and "ended" in e.message, e.message
        assert e.response.headers["X-Sessiond-Session"] == sid
        assert [m["role"] for m in c.messages(sid)["messages"]] == ["user"]
    finally:
        server.stop()


def _posted(d, body: dict) -> tuple[int, str]:
    """POST /openai/v1/chat/completions on the daemon's socket: (status, the body's text)."""
    conn = UnixHTTP(d.socket)
    conn.request("POST", "/openai/v1/chat/completions", json.dumps(body), {"Content-Type": "application/json"})
    resp = conn.getresponse()
    return resp.status, resp.read().decode()


@pytest.mark.parametrize(
    "options,field",
    [
        # was: a 500 "Internal Server Error" page, after a new session and its question were recorded
        *(({"stream_options": bad}, "stream_options") for bad in ("yes", [1], 5)),
        # "no" (or 0, "false") was read for its truth: "no" and "false" asked for the usage chunk, which the app
        # that wrote them meant not to have; OpenAI refuses anything but a boolean
        *(
            ({"stream_options": {"include_usage": bad}}, "stream_options.include_usage")
            for bad in ("no", "false", 0, [])
        ),
    ],
)
def test_stream_options_the_endpoint_cannot_read_are_refused_before_anything_is_asked_or_recorded(
    make_daemon, options, field
):
    p, server = serve_threaded(Provider())
    try:
        d = started_with_provider(make_daemon, f"http://127.0.0.1:{server.port}/v1")
        body = {"model": "echo-1", "stream": True, "messages": [{"role": "user", "content": "q"}], **options}
        status, text = _posted(d, body)
        said = json.loads(text)
        # refused as the endpoint's other checks of a body are (stream, messages, model): 422, naming the field
        assert status == 422 and field in said["error"]["message"], (status, said)
        assert said["error"]["type"] == "invalid_request_error"
        assert field == "stream_options" or said["error"]["param"] == field, said
        assert d.client().list_sessions()["sessions"] == [] and p.requests == []
        for fine in (True, False, None):  # a boolean, or null (left out), is taken
            status, streamed = _posted(d, {**body, "stream_options": {"include_usage": fine}})
            assert status == 200, streamed
            assert ('"usage": {' in streamed or '"usage":{' in streamed) == (fine is True), (fine, streamed)
    finally:
        server.stop()


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("status", [500, 429, 401])
def test_a_call_without_a_session_that_the_provider_refuses_leaves_no_session(refusing, status, stream):
    """An app that names no session gets a new one with its answer; a provider failure before any answer
    leaves none: the app never learns the new session's id (an SDK raises the error, its header unread), and
    the SDK's own retries (two, by default, of a 429 or 5xx) each made another, each holding the question
    alone (was: a provider down meant three orphan sessions per call, counted against max_active_sessions)."""
    d, said, sid, app = refusing
    said.update(status=status, headers={"Retry-After": "0"} if status == 429 else None)
    c = d.client()
    info = d.client().status()["openai"]
    key = open(info["api_key_file"]).read().strip()
    new_app = openai.OpenAI(base_url=info["base_url"], api_key=key, max_retries=2)
    msgs = [{"role": "user", "content": "anyone?"}]
    with pytest.raises(openai.APIStatusError) as e:
        if stream:
            list(new_app.chat.completions.create(model="m", messages=msgs, stream=True))
        else:
            new_app.chat.completions.create(model="m", messages=msgs)
    assert "X-Sessiond-Session" not in e.value.response.headers, e.value.response.headers
    assert [s["id"] for s in c.list_sessions()["sessions"]] == [sid]
    # a session named keeps its question, as before
    with pytest.raises(openai.APIStatusError):
        app.chat.completions.create(model="m", messages=msgs)
    assert [(m["role"], m["content"]) for m in c.messages(sid)["messages"]] == [("user", "anyone?")]


def test_a_429_for_the_provider_account_s_spent_quota_is_not_said_to_pass_and_not_retried(refusing):
    # OpenAI's 429 insufficient_quota: the account's credit is spent, no wait mends it. It was said as a rate
    # limit ("retry later"), and an OpenAI app's SDK retried it (a 429) before giving up
    d, said, sid, app = refusing
    said.update(
        status=429,
        message="You exceeded your current quota, please check your plan and billing details.",
        type="insufficient_quota",
        code="insufficient_quota",
    )
    with pytest.raises(ApiError) as e:
        d.client().complete(sid, "q")
    assert (e.value.code, e.value.status) == ("provider_quota_exceeded", 429), e.value.message
    assert "retry later" not in e.value.message and "api_key_file / api_key_env of [providers.p]" in e.value.message
    assert "check your plan and billing" in e.value.message and e.value.details["provider_code"] == "insufficient_quota"
    assert e.value.details.get("retry_after") is None
    with pytest.raises(openai.RateLimitError) as oe:
        app.chat.completions.create(model="m", messages=[{"role": "user", "content": "q"}])
    assert oe.value.code == "provider_quota_exceeded" and oe.value.type == "insufficient_quota", oe.value.body
    assert oe.value.response.headers.get("x-should-retry") == "false"
    # a rate limit stays one
    said.update(message="Rate limit reached", type="requests", code="rate_limit_exceeded")
    with pytest.raises(ApiError) as e:
        d.client().complete(sid, "q")
    assert e.value.code == "provider_rate_limited" and "retry later" in e.value.message


def test_a_503_s_retry_after_is_passed_on_as_a_429_s_is(refusing):
    # a provider down for maintenance says how long (RFC 9110: Retry-After with a 503); it was dropped, and an
    # OpenAI app's SDK retried at once, into the same 503
    d, said, sid, app = refusing
    said.update(status=503, message="down for maintenance", headers={"Retry-After": "30"})
    with pytest.raises(ApiError) as e:
        d.client().complete(sid, "q")
    assert (e.value.code, e.value.status) == ("provider_failed", 502), e.value.message
    assert e.value.details["retry_after"] == 30 and "retry after 30 s" in e.value.message, e.value.message
    with pytest.raises(openai.InternalServerError) as oe:
        app.chat.completions.create(model="m", messages=[{"role": "user", "content": "q"}])
    assert oe.value.response.headers["Retry-After"] == "30"
    said["headers"] = {}
    with pytest.raises(ApiError) as e:
        d.client().complete(sid, "q")
    assert "retry_after" not in e.value.details and "retry later" in e.value.message


def test_a_context_the_model_does_not_take_names_the_ways_to_make_it_fit(refusing):
    # the provider's 400 context_length_exceeded: `ask --again` alone fails the same way; the error names
    # compacting the chat and giving it a budget below the model's
    d, said, sid, _ = refusing
    said.update(
        status=400,
        message="This model's maximum context length is 8192 tokens.",
        type="invalid_request_error",
        code="context_length_exceeded",
    )
    chat = d.client().get_session(sid)["current_chat"]
    with pytest.raises(ApiError) as e:
        d.client().complete(sid, "q")
    assert e.value.details["provider_code"] == "context_length_exceeded"
    assert f"sessiond compact {sid} --chat {chat} --target-tokens N" in e.value.message, e.value.message
    assert f"sessiond chat set {sid} {chat} --max-context-tokens N" in e.value.message, e.value.message
    res = run_cli(d.home, "ask", sid, "q2")
    assert res.returncode == 1 and "maximum context length" in res.stderr and "--max-context-tokens N" in res.stderr
    assert "--again" in res.stderr, res.stderr
    # another refusal names no context
    said.update(status=400, message="temperature is out of range", code="invalid_value")
    with pytest.raises(ApiError) as e:
        d.client().complete(sid, "q")
    assert "compact" not in e.value.message, e.value.message


def test_a_retry_after_of_months_is_said_in_days_not_in_exponents(refusing):
    # it was "retry after 8.64e+07 s": a number no one reads as the 1,000 days it is
    d, said, sid, _ = refusing
    c = d.client()
    for value, words in (("86400000", "retry after 1,000 days"), ("5400", "retry after 90 minutes"), ("7", "7 s")):
        said["headers"] = {"Retry-After": value}
        for status in (429, 503):
            said["status"] = status
            with pytest.raises(ApiError) as e:
                c.complete(sid, "q")
            assert words in e.value.message and "e+" not in e.value.message, e.value.message
            assert e.value.details["retry_after"] == float(value)


@pytest.mark.parametrize(
    "secs, words",
    [
        (0, "0 s"),
        (2.5, "2.5 s"),
        (5.93128, "6 s"),
        (59.2, "60 s"),
        (119.5, "120 s"),
        (120, "2 minutes"),
        (5400, "90 minutes"),
        (7200, "2 hours"),
        (86400, "24 hours"),
        (172800, "2 days"),
        (86400000, "1,000 days"),
        (1e20, "more than 100 years"),
    ],
)
def test_a_wait_is_said_in_words(secs, words):
    from sessiond.storage.clock import wait_said

    assert wait_said(secs) == words
