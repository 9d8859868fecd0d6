"""The OpenAI-compatible listener refuses what no retry mends with a status the official `openai` SDK does
not retry (was: 409, which the SDK retries twice by default, each retry refused again): a context too long
for its chat's budget is OpenAI's own 400 `context_length_exceeded`, a session that takes no more (ended,
expired, paused) a 400 with sessiond's code, and a spent quota keeps its 429 with `x-should-retry: false`.
The socket API keeps its statuses (409)."""

from __future__ import annotations

import openai
import pytest

from conftest import cli_json, started_with_provider, wait_for
from servers.openai_server import Provider, serve_threaded
from sessiond.client import ClientError

HISTORY = [{"role": "user", "content": "a question long enough to pass a tiny context budget " * 4}]


@pytest.fixture
def daemon(make_daemon):
    p, server = serve_threaded(Provider())
    yield started_with_provider(make_daemon, f"http://127.0.0.1:{server.port}/v1", openai_listen="127.0.0.1:0")
    server.stop()


def _app(d, sid: str, sent: list) -> openai.OpenAI:
    """The SDK as apps use it: its default retries on, each request it sends counted in `sent`."""
    info = cli_json(d.home, "status")["openai"]
    return openai.OpenAI(
        base_url=info["base_url"],
        api_key=open(info["api_key_file"]).read().strip(),
        default_headers={"X-Sessiond-Session": sid},
        http_client=openai.DefaultHttpxClient(event_hooks={"request": [sent.append]}),
    )


def _refused(d, sid: str) -> openai.APIStatusError:
    sent: list = []
    with pytest.raises(openai.APIStatusError) as exc:
        _app(d, sid, sent).chat.completions.create(model="echo-1", messages=HISTORY)
    assert len(sent) == 1, f"the SDK sent the request {len(sent)} times"
    return exc.value


def test_a_context_too_long_is_openais_own_400(daemon):
    c = daemon.client()
    sid = c.create_session(model="echo-1", max_context_tokens=10, auto_compact=False)["id"]
    err = _refused(daemon, sid)
    assert isinstance(err, openai.BadRequestError), err
    assert err.code == "context_length_exceeded" and err.type == "invalid_request_error", err.body
    assert err.param == "messages", err.body
    with pytest.raises(ClientError) as native:  # the socket API's own status stays
        c.complete(sid, HISTORY[0]["content"])
    assert native.value.status == 409 and native.value.code == "context_overflow"


@pytest.mark.parametrize("how", ["ended", "expired", "paused"])
def test_a_session_that_takes_no_more_is_a_400_not_retried(daemon, how):
    c = daemon.client()
    sid = c.create_session(model="echo-1", **({"expires_in": 1} if how == "expired" else {}))["id"]
    if how == "ended":
        c.end(sid)
    elif how == "paused":
        c.pause(sid)
    else:
        wait_for(lambda: c.get_session(sid)["status"] == "ended", timeout=30, what="the session's expiry")
    err = _refused(daemon, sid)
    assert isinstance(err, openai.BadRequestError), err
    assert err.code == {"ended": "conflict", "expired": "expired", "paused": "conflict"}[how], err.body
    assert err.type == "invalid_request_error", err.body
    with pytest.raises(ClientError) as native:
        c.complete(sid, "more")
    assert native.value.status == 409


def test_a_spent_quota_is_a_429_the_sdk_does_not_retry(daemon):
    c = daemon.client()
    sid = c.create_session(model="echo-1", token_quota=5)["id"]
    c.append(sid, "user", "all of it", tokens=5)
    err = _refused(daemon, sid)
    assert isinstance(err, openai.RateLimitError) and err.code == "quota_exceeded", err.body


@pytest.mark.parametrize("bad", ["n" * 201, 5, "a\0b"])
def test_a_message_name_the_api_would_refuse_is_refused_naming_it(daemon, bad):
    """A message's `name` over 200 characters (or not a string, or holding a NUL) went to the provider while
    the endpoint stored nothing of it, silently, where the socket API's append refuses it. Both refuse it now,
    naming the field, nothing recorded; a name the append takes is stored."""
    c = daemon.client()
    sid = c.create_session(model="echo-1")["id"]
    sent: list = []
    app = _app(daemon, sid, sent)
    with pytest.raises(openai.UnprocessableEntityError) as exc:
        app.chat.completions.create(model="echo-1", messages=[{"role": "user", "content": "q", "name": bad}])
    assert exc.value.param == "messages[0].name" and "messages[0].name" in exc.value.message, exc.value.body
    assert len(sent) == 1 and c.messages(sid)["messages"] == []
    with pytest.raises(ClientError) as native:
        c.append(sid, "user", "q", name=bad)
    assert native.value.status == 422 and "name" in native.value.message, native.value.message
    for fine in ("n" * 200, ""):  # what the append takes, the endpoint stores
        asked = [{"role": "user", "content": f"q{len(fine)}", "name": fine}]
        app.chat.completions.create(model="echo-1", messages=asked)  # type: ignore[arg-type]
        c.append(sid, "user", f"r{len(fine)}", name=fine)
    names = [m.get("name") for m in c.messages(sid)["messages"] if m["role"] == "user"]
    assert names == ["n" * 200, "n" * 200, "", ""], names
