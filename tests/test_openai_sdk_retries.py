"""Which failures of the model provider an OpenAI app's SDK retries. The endpoint answers a provider's failure
with a 502 (sessiond's own message and code), which OpenAI's SDKs retry (twice by default): right for the
provider's own 5xx, a timeout, a connection refused, but a provider refusing sessiond's key (401/403), a key
file sessiond cannot read and an answer too large to keep stand until the user changes something; each retry
asked the provider again with the refused key (three 401s in its log for one call), or had it generate the
too-large answer again. Those carry `x-should-retry: false`, which the SDKs obey."""

from __future__ import annotations

import openai
import pytest

from conftest import cli_json, started_with_provider


@pytest.fixture
def loop(make_daemon, tmp_path):
    """A daemon whose providers are tests/servers/openai_server.py: `loop` (the default), and `keyless`, whose
    api_key_file is not there."""
    from servers.openai_server import Provider, serve_threaded

    p, server = serve_threaded(Provider())
    url = f"http://127.0.0.1:{server.port}/v1"
    d = started_with_provider(make_daemon, url, default_provider="loop", openai_listen="127.0.0.1:0", start=False)
    with open(f"{d.home}/config.toml", "a") as f:
        f.write(f'[providers.keyless]\nbase_url = "{url}"\napi_key_file = "{tmp_path}/no-such-key"\n')
    d.start()
    yield d, p
    server.stop()


def retrying_app(d, **headers: str) -> openai.OpenAI:
    """The SDK as an app uses it: its own retries on (twice)."""
    info = cli_json(d.home, "status")["openai"]
    key = open(info["api_key_file"]).read().strip()
    return openai.OpenAI(base_url=info["base_url"], api_key=key, max_retries=2, default_headers=headers)


@pytest.mark.parametrize("status", [401, 403])
def test_a_provider_refusing_sessiond_s_key_is_asked_once_not_once_per_sdk_retry(loop, status):
    d, p = loop
    p.faults.status, p.faults.times = status, 100
    with pytest.raises(openai.InternalServerError) as e:
        retrying_app(d).chat.completions.create(model="echo-1", messages=[{"role": "user", "content": "q"}])
    assert (e.value.status_code, e.value.code) == (502, "provider_unauthorized")
    assert "api_key_file / api_key_env of [providers.loop]" in e.value.message, e.value.message
    assert e.value.response.headers.get("x-should-retry") == "false"
    assert len(p.requests) == 1, "the SDK retried a refused key"


def test_a_key_sessiond_cannot_read_is_not_retried(loop):
    d, p = loop
    sid = d.client().create_session(model="echo-1", settings={"provider": "keyless"})["id"]
    with pytest.raises(openai.InternalServerError) as e:
        retrying_app(d, **{"X-Sessiond-Session": sid}).chat.completions.create(
            model="echo-1", messages=[{"role": "user", "content": "q"}]
        )
    assert (e.value.status_code, e.value.code) == (502, "provider_key_unreadable"), e.value.message
    assert "no-such-key" in e.value.message
    assert e.value.response.headers.get("x-should-retry") == "false"
    assert p.requests == []


def test_a_provider_s_own_failure_is_left_to_the_sdk_s_retries(loop):
    d, p = loop
    p.faults.status, p.faults.times = 503, 1  # the first try fails, the SDK's retry is answered
    answer = retrying_app(d).chat.completions.create(model="echo-1", messages=[{"role": "user", "content": "q"}])
    assert answer.choices[0].message.content == "echo: q"
    assert len(p.requests) == 2


@pytest.mark.parametrize("stream", [False, True])
def test_an_app_that_times_out_leaves_no_session_holding_its_question_alone(loop, stream):
    """An app whose SDK times out while the model thinks (a reasoning model past the app's `timeout`) leaves, and
    the SDK sends the same request again, twice, with no X-Sessiond-Session: the app never had the id of the session
    its first try made (the answer's header), and each try made one, left holding the question alone (three
    sessions for one question, none answered). As at the daemon's stop, the session a request made is deleted when
    its app leaves before any of the answer."""
    import time

    d, p = loop
    p.faults.held = True
    app = retrying_app(d).with_options(timeout=1.0)
    q = [{"role": "user", "content": "count"}]
    try:
        with pytest.raises(openai.APITimeoutError):
            res = app.chat.completions.create(model="m", messages=q, stream=stream)
            list(res) if stream else None
        c, deadline = d.client(), time.monotonic() + 15
        while (made := c.list_sessions()["sessions"]) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert made == [], [c.messages(s["id"])["messages"] for s in made]
    finally:
        p.resume.set()


def test_an_app_that_stops_a_stream_it_was_given_keeps_the_session_its_header_named(loop):
    """A stream's response names the session its request made (X-Sessiond-Session, the endpoint's one way to learn
    it) as soon as it begins. An app that read it and stopped the stream before the model's first word (a chat
    app's Stop while a reasoning model thinks) had that session deleted with its question, as if it had timed out
    before any answer: its next question, naming the session it was given, was refused 404, its conversation gone.
    No SDK retries a stream it was given, so nothing makes a second session: the session is kept, and goes on."""
    import http.client
    import json
    import os
    import time
    from urllib.parse import urlsplit

    d, p = loop
    p.faults.script, p.faults.script_wait = [({"content": "late"}, "stop")], 0  # the role chunk, then it thinks
    info = cli_json(d.home, "status")["openai"]
    url, key = urlsplit(info["base_url"]), open(info["api_key_file"]).read().strip()
    goes_on = retrying_app(d)  # (made before the Stop: its question comes right after it)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    q = {"role": "user", "content": "count"}
    body = {"model": "echo-1", "messages": [q], "stream": True}
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    try:
        conn.request("POST", url.path.rstrip("/") + "/chat/completions", json.dumps(body), headers)
        resp = conn.getresponse()
        sid = resp.getheader("X-Sessiond-Session")
        assert resp.status == 200 and sid, (resp.status, resp.getheaders())
        assert resp.readline().startswith(b"data: ")  # the role chunk: the stream has begun
        conn.close()  # the app's Stop, before any word
        log, c, deadline = os.path.join(d.home, "logs", "sessiond.log"), d.client(), time.monotonic() + 15
        while any(s["id"] == sid for s in c.list_sessions()["sessions"]):  # (deleted, or its end logged)
            if os.path.exists(log) and "answer interrupted by the app" in open(log).read():
                break
            assert time.monotonic() < deadline, "the stopped stream never ended"
            time.sleep(0.05)
        p.faults.script = None
        answer = goes_on.with_options(default_headers={"X-Sessiond-Session": sid}).chat.completions.create(
            model="echo-1", messages=[q, {"role": "user", "content": "and now?"}]
        )
    finally:
        p.resume.set()
    assert answer.choices[0].message.content == "echo: and now?"
    kept = [m["content"] for m in c.messages(sid)["messages"]]
    assert kept == ["count", "and now?", "echo: and now?"], kept


def test_only_a_retry_of_the_same_request_goes_on_in_the_session_its_first_try_kept():
    """openai_retries.Retries: an SDK's retry (x-stainless-retry-count 1 and up) of the same body, or a request with
    the same Idempotency-Key, is the first try's; a first try of the same body (another conversation begun with
    the same words) or another body is not."""
    from aiohttp.test_utils import make_mocked_request

    from sessiond.daemon.openai_retries import Retries

    def req(**headers: str):
        return make_mocked_request("POST", "/openai/v1/chat/completions", headers=headers)

    r = Retries()
    r.kept(req(**{"x-stainless-retry-count": "0"}), b"body", "s1", "main")
    assert r.retried(req(**{"x-stainless-retry-count": "1"}), b"other") is None
    assert r.retried(req(**{"x-stainless-retry-count": "1"}), b"body") == ("s1", "main")
    assert r.retried(req(**{"x-stainless-retry-count": "2"}), b"body") == ("s1", "main")  # (that retry failed too)
    assert r.retried(req(**{"x-stainless-retry-count": "0"}), b"body") is None  # a new request, the same words
    r.kept(req(**{"Idempotency-Key": "k1"}), b"body", "s2", "c")
    assert r.retried(req(**{"Idempotency-Key": "k2", "x-stainless-retry-count": "1"}), b"body") is None
    assert r.retried(req(**{"Idempotency-Key": "k1"}), b"body") == ("s2", "c")


def test_a_retry_of_words_another_request_also_sent_goes_on_in_no_kept_session():
    """Two apps (one endpoint key, nothing else telling them apart) begin with the same words ("hi"), the same body
    byte for byte. A's first try failed and kept the session it made (shared, or written to by another app); B's
    first try failed too (the provider down for both). B's SDK retry of that body went on in A's session: B's
    exchange recorded in A's conversation (seen by whoever A's session is shared with), B named A's session. A body
    two first tries sent is no retry's own: its retry makes a session, as before (an Idempotency-Key still names
    one)."""
    from aiohttp.test_utils import make_mocked_request

    from sessiond.daemon.openai_retries import Retries

    def req(count: str, **headers: str):
        return make_mocked_request(
            "POST", "/openai/v1/chat/completions", headers={"x-stainless-retry-count": count, **headers}
        )

    for b_first_before_a_kept in (False, True):
        r = Retries()
        a = req("0")
        assert r.retried(a, b"hi") is None
        if b_first_before_a_kept:
            assert r.retried(req("0"), b"hi") is None  # B's first try, under way with A's
        r.kept(a, b"hi", "s1", "main")
        if not b_first_before_a_kept:
            assert r.retried(req("0"), b"hi") is None  # B's first try, after A's failed
        assert r.retried(req("1"), b"hi") is None, b_first_before_a_kept  # B's (or A's: none can tell) retry
    r = Retries()
    a = req("0", **{"Idempotency-Key": "k1"})
    assert r.retried(a, b"hi") is None
    assert r.retried(req("0"), b"hi") is None
    r.kept(a, b"hi", "s2", "c")
    assert r.retried(req("1", **{"Idempotency-Key": "k1"}), b"hi") == ("s2", "c")  # its key names it
    assert r.retried(req("1"), b"hi") is None


def test_a_first_try_whose_note_was_forgotten_keeps_its_session_for_no_retry(monkeypatch):
    """The first tries noted are bounded (FIRSTS): one forgotten while its request was under way (many others begun
    meanwhile) fails and keeps its session; that is no error (it was: the failure's answer lost to a KeyError), and
    its retry, which no note tells from another app's, makes a session."""
    from aiohttp.test_utils import make_mocked_request

    from sessiond.daemon import openai_retries
    from sessiond.daemon.openai_retries import Retries

    def req(count: str):
        return make_mocked_request("POST", "/openai/v1/chat/completions", headers={"x-stainless-retry-count": count})

    monkeypatch.setattr(openai_retries, "FIRSTS", 2)
    r = Retries()
    a = req("0")
    assert r.retried(a, b"hi") is None
    for other in (b"1", b"2"):
        assert r.retried(req("0"), other) is None
    r.kept(a, b"hi", "s1", "main")
    assert r.retried(req("1"), b"hi") is None


class _Clock:
    """openai_retries' clock, moved on by the test (time.monotonic, read by the module through its `time`)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


def test_a_first_try_longer_than_the_notes_keep_is_told_by_its_end_not_its_start(monkeypatch):
    """A first try is noted as it begins, and a note KEEP (600 s) old was no longer read: a first try under way that
    long (the OpenAI SDK's own timeout is 600 s: an app's request to a reasoning model that thinks until the SDK gives
    up) had its note gone by its end. Its own retry, its session kept, made a second session holding the question
    (what the kept session is for); and another app's first try of the same words under way that long was no longer
    told apart, its retry going on in the kept session of the app that began after it (its exchange in that app's
    conversation). A first try's note is read as long as it is under way, and KEEP after its end."""
    from aiohttp.test_utils import make_mocked_request

    from sessiond.daemon import openai_retries
    from sessiond.daemon.openai_retries import KEEP, Retries

    def req(count: str):
        return make_mocked_request("POST", "/openai/v1/chat/completions", headers={"x-stainless-retry-count": count})

    clock = _Clock()
    monkeypatch.setattr(openai_retries, "time", clock)
    r = Retries()
    a = req("0")
    assert r.retried(a, b"hi") is None
    clock.now += KEEP + 1  # the SDK's timeout: the app leaves, its session kept (written to by another app)
    r.kept(a, b"hi", "s1", "main")
    r.ended(a)
    clock.now += 1
    assert r.retried(req("1"), b"hi") == ("s1", "main")  # its retry, a second later: on in its session
    # another app's first try of the same words, begun before A's and under way past KEEP
    r, b, a = Retries(), req("0"), req("0")
    assert r.retried(b, b"hi") is None
    clock.now += 300
    assert r.retried(a, b"hi") is None
    clock.now += 1
    r.kept(a, b"hi", "s1", "main")
    r.ended(a)
    clock.now += KEEP - 250  # B's note begun KEEP + 51 s ago: B still under way
    assert r.retried(req("1"), b"hi") is None  # B's retry, sent as its SDK gave up (its end not seen yet)
    r.ended(b)
    clock.now += 1
    assert r.retried(req("1"), b"hi") is None  # and once its end was seen


def test_an_idempotency_key_sent_again_with_another_body_is_no_retry():
    """A retry sends its request again, the same body: an Idempotency-Key sent again with another body is another
    request (an app giving one key to all its calls, as a header set once in its settings; or one given to its next
    question by mistake). It went on in the session the key's first request kept, as that request's retry: another
    conversation recorded in it. It makes a session of its own, as a call naming none does."""
    from aiohttp.test_utils import make_mocked_request

    from sessiond.daemon.openai_retries import Retries

    def req(**headers: str):
        return make_mocked_request("POST", "/openai/v1/chat/completions", headers=headers)

    r = Retries()
    first = req(**{"Idempotency-Key": "k1"})
    assert r.retried(first, b"hi") is None
    r.kept(first, b"hi", "s1", "main")
    assert r.retried(req(**{"Idempotency-Key": "k1", "x-stainless-retry-count": "1"}), b"another") is None
    assert r.retried(req(**{"Idempotency-Key": "k1"}), b"another") is None
    assert r.retried(req(**{"Idempotency-Key": "k1"}), b"hi") == ("s1", "main")  # its retry, the same body
