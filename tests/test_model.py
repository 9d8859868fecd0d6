"""Talking to a model (issue 16): `sessiond ask`, POST /v1/sessions/{id}/complete, and the OpenAI-compatible
endpoint driven by the official `openai` package, against a loopback provider (tests/servers/openai_server.py)
and real daemons. An optional live test runs when SESSIOND_TEST_OPENAI_URL (and SESSIOND_TEST_OPENAI_MODEL)
are set, e.g. a local Ollama: http://127.0.0.1:11434/v1 and llama3.2."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import signal
import stat
import subprocess
import time
import urllib.parse

import openai

try:  # the openai package's own HTTP library: httpx, renamed httpx2 in its newer releases
    import httpx2 as httpx
except ImportError:
    import httpx
import pytest

from conftest import PY, ReservedPort, cli_json, run_cli, wait_for
from servers.openai_server import Provider, serve_threaded
from sessiond.client import ApiError


def write_config(home: str, text: str) -> None:
    os.makedirs(home, mode=0o700, exist_ok=True)
    os.chmod(home, 0o700)
    with open(os.path.join(home, "config.toml"), "w") as f:
        f.write(text)


def config(port: int, *, extra: str = "", provider_extra: str = "") -> str:
    return (
        f'default_provider = "loop"\n{extra}\n[providers.loop]\nbase_url = "http://127.0.0.1:{port}/v1"\n'
        f"{provider_extra}\n"
    )


@pytest.fixture
def provider():
    p, server = serve_threaded(Provider())
    yield p, server
    server.stop()


@pytest.fixture
def setup(make_daemon, provider):
    """A daemon whose default provider is the loopback server; returns (daemon, provider, make)."""
    p, server = provider

    def make(store=None, *, extra: str = "", provider_extra: str = ""):
        d = make_daemon(store)
        write_config(d.home, config(server.port, extra=extra, provider_extra=provider_extra))
        return d.start()

    return make, p, server


def assistant(c, sid):
    return [m for m in c.messages(sid, limit=1000)["messages"] if m["role"] == "assistant"]


def history(c, sid):
    return [(m["role"], m["content"]) for m in c.messages(sid, limit=1000)["messages"]]


# ---------------------------------------------------------------------------------------------- ask
def test_ask_streams_and_records_the_answer_with_usage_times_and_settings(setup):
    make, p, _ = setup
    d = make()
    c = d.client()
    sid = c.create_session(
        system_prompt="Be terse.",
        model="echo-1",
        settings={"temperature": 0.3, "top_p": 0.9, "top_k": 20, "max_tokens": 64},
        initial_messages=[{"role": "user", "content": "primer"}],
    )["id"]
    res = run_cli(d.home, "ask", sid, "hello there", check=True)
    assert res.stdout == "echo: hello there\n"
    sent = p.requests[-1]
    assert sent["messages"] == [
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": "primer"},
        {"role": "user", "content": "hello there"},
    ]
    assert sent["temperature"] == 0.3 and sent["top_p"] == 0.9 and sent["max_tokens"] == 64
    assert "top_k" not in sent  # the provider does not say it takes top_k
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
    [a] = assistant(c, sid)
    assert a["content"] == "echo: hello there" and a["model"] == "echo-1" and a["provider"] == "loop"
    assert a["usage"] == {"prompt_tokens": p.prompt_tokens(sent), "completion_tokens": 3}
    assert a["tokens"] == 3 and "interrupted" not in a
    assert 0 <= a["response"]["first_token_ms"] <= a["response"]["total_ms"]
    # the usage feeds the quota: the question's estimate, plus the answer's prompt and completion tokens
    user = c.messages(sid)["messages"][0]
    assert c.quota(sid)["tokens_used"] == user["tokens"] + p.prompt_tokens(sent) + 3
    per_chat = c.stats(sid)["per_chat"][0]
    assert per_chat["answers"] == 1 and per_chat["avg_first_token_seconds"] is not None
    assert per_chat["avg_answer_seconds"] is not None
    # and `sessiond stats ID` shows them too (it showed only the wait from question to answer, not the times
    # the model took, which the README says it averages per chat)
    lines = run_cli(d.home, "stats", sid, check=True).stdout.splitlines()
    assert lines[1].split()[:9] == ["CHAT", "NAME", "MESSAGES", "ANSWERS", "FIRST", "TOKEN", "S", "ANSWER", "S"], lines
    row = lines[2].split()
    assert row[:4] == ["main", "main", "2", "1"], lines
    assert float(row[4]) == per_chat["avg_first_token_seconds"] and float(row[5]) == per_chat["avg_answer_seconds"]
    # --json prints the stored message; the second question carries the first exchange
    out = cli_json(d.home, "ask", sid, "again")
    assert out["content"] == "echo: again" and out["id"] == assistant(c, sid)[-1]["id"]
    assert [m["content"] for m in p.requests[-1]["messages"]][-3:] == ["hello there", "echo: hello there", "again"]


def test_provider_per_session_and_top_k_where_accepted(setup, provider):
    make, p, server = setup
    d = make(extra="", provider_extra="")
    # a second provider that takes top_k, named per session with --provider
    write_config(
        d.home,
        config(server.port) + f'[providers.other]\nbase_url = "http://127.0.0.1:{server.port}/v1"\ntop_k = true\n',
    )
    d.restart()
    sid = cli_json(d.home, "new", "--model", "echo-2", "--top-k", "7", "--temperature", "0.5")["id"]
    cli_json(d.home, "set", sid, "--provider", "other")
    s = d.client().get_session(sid)
    assert s["settings"] == {"top_k": 7, "temperature": 0.5, "provider": "other"}  # --provider kept the rest
    out = cli_json(d.home, "ask", sid, "hi")
    assert out["provider"] == "other" and p.requests[-1]["top_k"] == 7 and p.requests[-1]["model"] == "echo-2"
    # --provider and --model on ask win for that question
    out = cli_json(d.home, "ask", sid, "--provider", "loop", "--model", "echo-1", "yo")
    assert out["provider"] == "loop" and out["model"] == "echo-1" and "top_k" not in p.requests[-1]
    res = run_cli(d.home, "ask", sid, "--provider", "nope", "x")
    assert res.returncode == 1 and "no provider 'nope'" in res.stderr
    # settings.provider syncs like any setting: it is in the session's settings
    res = run_cli(d.home, "new", "--provider", "", "--json")  # refused as the option typed: a usage error
    assert res.returncode == 2 and "--provider must not be empty" in res.stderr


def test_complete_json_stream_and_async_client(setup):
    make, p, _ = setup
    c = make().client()
    sid = c.create_session(model="echo-1")["id"]
    m = c.complete(sid, "one")
    assert m["content"] == "echo: one" and m["role"] == "assistant" and p.requests[-1]["stream"] is False
    s = c.complete_stream(sid, "two words")
    assert list(s) == ["echo:", " two", " words"] and s.message["content"] == "echo: two words"
    assert s.message["id"] == assistant(c, sid)[-1]["id"]

    async def go():
        from sessiond.client import AsyncClient

        async with AsyncClient(c.home) as ac:
            m = await ac.complete(sid, "three")
            parts = [x async for x in ac.complete_stream(sid, "four")]
            return m, parts

    m3, parts = asyncio.run(go())
    assert m3["content"] == "echo: three" and parts[:-1] == ["echo:", " four"] and parts[-1]["content"] == "echo: four"
    assert history(c, sid) == [
        ("user", "one"),
        ("assistant", "echo: one"),
        ("user", "two words"),
        ("assistant", "echo: two words"),
        ("user", "three"),
        ("assistant", "echo: three"),
        ("user", "four"),
        ("assistant", "echo: four"),
    ]


def test_context_is_what_compaction_left_and_quota_refuses_before_sending(setup):
    make, p, _ = setup
    c = make().client()
    sid = c.create_session(model="echo-1", system_prompt="S")["id"]
    c.append_many(sid, [{"role": "user", "content": f"old {i}", "tokens": 100} for i in range(5)])
    c.compact(sid, target_tokens=150)
    c.complete(sid, "new")
    sent = [m["content"] for m in p.requests[-1]["messages"]]
    assert sent[0] == "S" and "old 0" not in sent and "old 4" in sent and sent[-1] == "new"
    # the budget compacts first, as an append does
    sid2 = c.create_session(model="echo-1", max_context_tokens=1000)["id"]
    c.append_many(sid2, [{"role": "user", "content": f"m{i}", "tokens": 200} for i in range(3)])
    c.complete(sid2, "q" * 900)  # 225 tokens more: past 1000 x 0.8
    assert "m0" not in [m["content"] for m in p.requests[-1]["messages"]]
    # a spent quota: refused before anything is sent or stored
    sid3 = c.create_session(model="echo-1", token_quota=50)["id"]
    c.append(sid3, "user", "x", tokens=50)
    n = len(p.requests)
    with pytest.raises(ApiError) as e:
        c.complete(sid3, "more?")
    assert e.value.status == 429 and e.value.code == "quota_exceeded" and len(p.requests) == n
    # the ways out it names are those an append's refusal names: compacting frees context, not quota
    assert "`sessiond compact" not in e.value.message and f"`sessiond clone {sid3}`" in e.value.message
    assert f"`sessiond fork {sid3} --at MESSAGE_ID`" in e.value.message
    said = e.value.message  # only ways out that work: compacting frees context, not quota
    assert "compact it" not in said.lower() and "--token-quota" in said and f"fork {sid3} --at" in said, said
    assert history(c, sid3) == [("user", "x")]
    # an answer the provider gave is recorded even past the quota (its usage is what was spent)
    sid4 = c.create_session(model="echo-1", token_quota=30)["id"]
    c.complete(sid4, "w " * 50)  # 25 tokens: fits; the answer's usage then passes the quota
    assert c.quota(sid4)["tokens_used"] > 30 and len(assistant(c, sid4)) == 1
    # the next question is refused saying by how much the answer passed the quota, not that the quota was
    # lowered (was: "(its quota is below what it had used)", which sent users looking for who lowered it)
    used = c.quota(sid4)["tokens_used"]
    with pytest.raises(ApiError) as e:
        c.complete(sid4, "and now?")
    said = e.value.message
    assert f"used {used} of its 30 tokens ({used - 30} over)" in said and "quota is below" not in said, said


def test_retry_with_the_same_idempotency_key_records_nothing_twice(setup):
    make, p, _ = setup
    c = make().client()
    sid = c.create_session(model="echo-1")["id"]
    first = c.complete(sid, "once", idempotency_key="k-1")
    n = len(p.requests)
    again = c.complete(sid, "once", idempotency_key="k-1")
    assert again["id"] == first["id"] and again["content"] == first["content"] and len(p.requests) == n
    s = c.complete_stream(sid, "once", idempotency_key="k-1")
    assert "".join(s) == "echo: once" and s.message["id"] == first["id"]
    assert history(c, sid) == [("user", "once"), ("assistant", "echo: once")]
    # a retry after a provider error asks again, and stores the question once
    p.faults.status, p.faults.times = 500, 1
    with pytest.raises(ApiError):
        c.complete(sid, "twice", idempotency_key="k-2")
    c.complete(sid, "twice", idempotency_key="k-2")
    assert history(c, sid)[2:] == [("user", "twice"), ("assistant", "echo: twice")]


@pytest.mark.parametrize("stream", [False, True])
def test_each_provider_error_is_a_clear_error_and_the_question_stays(setup, stream):
    make, p, server = setup
    d = make(provider_extra="timeout = 0.5\n")
    c = d.client()
    sid = c.create_session(model="echo-1")["id"]

    def ask(text, **kw):
        if stream:
            s = c.complete_stream(sid, text, **kw)
            return "".join(s), s
        return c.complete(sid, text, **kw), None

    cases = [
        ("status", 401, "provider_unauthorized", 502),
        ("status", 500, "provider_failed", 502),
        ("status", 429, "provider_rate_limited", 429),
        ("model", "nope", "model_not_found", 404),
        ("hang", 1.5, "provider_timeout", 504),
    ]
    for i, (kind, value, code, status) in enumerate(cases):
        kw = {}
        if kind == "status":
            p.faults.status, p.faults.times, p.faults.retry_after = value, 1, 7
        elif kind == "model":
            kw["model"] = value
        else:
            p.faults.hang = value
        with pytest.raises(ApiError) as e:
            ask(f"q{i}", **kw)
        p.faults.hang = 0
        assert (e.value.code, e.value.status) == (code, status), e.value.message
        assert "provider 'loop'" in e.value.message
        if code == "provider_rate_limited":
            assert e.value.details["retry_after"] == 7 and "retry after 7 s" in e.value.message
        assert history(c, sid)[-1] == ("user", f"q{i}")  # the question stays; no answer recorded
    assert assistant(c, sid) == []
    # a stream cut in the middle: what arrived is recorded once, marked interrupted
    p.faults.cut_after = 2
    with pytest.raises(ApiError) as e:
        ask("one two three four")
    p.faults.cut_after = None
    assert e.value.code == "provider_stream_cut" and e.value.status == 502 and "cut the answer off" in e.value.message
    if stream:
        part = assistant(c, sid)
        assert len(part) == 1 and part[0]["interrupted"] is True and part[0]["content"] == "echo: one"
        assert part[0]["error"] == "provider_stream_cut" and e.value.details["message"]["id"] == part[0]["id"]
    else:
        assert assistant(c, sid) == []  # a JSON answer cut off is no answer at all
    # unreachable: a port nobody listens on, held so (a port let go could be another server's by now)
    with ReservedPort() as nobody:
        write_config(d.home, config(nobody.port))
        d.restart()
        with pytest.raises(ApiError) as e:
            ask("anyone?")
        assert e.value.code == "provider_unreachable" and e.value.status == 502
        assert "cannot be reached" in e.value.message
        res = run_cli(d.home, "ask", sid, "via cli")
    assert res.returncode == 1 and "cannot be reached" in res.stderr and "Traceback" not in res.stderr


def test_ctrl_c_stops_the_generation_and_records_what_arrived_once(setup):
    make, p, _ = setup
    d = make()
    c = d.client()
    sid = c.create_session(model="echo-1")["id"]
    p.faults.delay = 0.1
    words = " ".join(f"w{i}" for i in range(100))
    proc = subprocess.Popen(
        [PY, "-m", "sessiond.cli.main", "ask", sid, words, "--home", d.home],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    got = b""
    while b"w3" not in got:  # some of the answer has arrived
        got += os.read(proc.stdout.fileno(), 100)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=20) == 130
    assert b"marked interrupted" in proc.stderr.read()
    proc.stdout.close(), proc.stderr.close()
    [a] = wait_for(lambda: assistant(c, sid), timeout=10)
    assert a["interrupted"] is True and a["content"].startswith("echo: w0 w1 w2 w3")
    assert words.startswith(a["content"][6:]) and len(a["content"]) < len("echo: " + words)
    wait_for(lambda: p.streams_stopped == 1, timeout=10)  # the provider's generation was stopped
    assert len(assistant(c, sid)) == 1 and history(c, sid)[0] == ("user", words)


# ---------------------------------------------------------------------------------------------- OpenAI endpoint
def _status(d):
    return cli_json(d.home, "status")["openai"]


def test_openai_sdk_over_tcp_records_only_what_is_new(setup):
    make, p, _ = setup
    d = make(extra='openai_listen = "127.0.0.1:0"')
    info = _status(d)
    assert info["base_url"].startswith("http://127.0.0.1:") and info["base_url"].endswith("/openai/v1")
    assert stat.S_IMODE(os.stat(info["api_key_file"]).st_mode) == 0o600
    # `sessiond status` says so too (it was in --json only), and which providers this device configures
    text = run_cli(d.home, "status", check=True).stdout
    assert f"openai:   {info['base_url']} (key in {info['api_key_file']})" in text, text
    assert "provider: loop (default)" in text, text
    key = open(info["api_key_file"]).read().strip()
    client = openai.OpenAI(base_url=info["base_url"], api_key=key, max_retries=0)
    # no session named: a new one, whose id comes back in the header
    raw = client.chat.completions.with_raw_response.create(
        model="echo-1", messages=[{"role": "system", "content": "sys"}, {"role": "user", "content": "a"}]
    )
    sid = raw.headers["X-Sessiond-Session"]
    r1 = raw.parse()
    assert r1.choices[0].message.content == "echo: a" and r1.usage.completion_tokens == 2
    app = openai.OpenAI(
        base_url=info["base_url"], api_key=key, max_retries=0, default_headers={"X-Sessiond-Session": sid}
    )
    msgs = [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "echo: a"},
        {"role": "user", "content": "b c"},
    ]
    chunks = list(app.chat.completions.create(model="echo-1", messages=msgs, stream=True))
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == "echo: b c" and all(ch.usage is None for ch in chunks)  # not asked for: not passed on
    msgs += [{"role": "assistant", "content": text}, {"role": "user", "content": "d"}]
    chunks = list(
        app.chat.completions.create(model="echo-1", messages=msgs, stream=True, stream_options={"include_usage": True})
    )
    assert chunks[-1].usage.completion_tokens == 2 and chunks[-1].choices == []
    # the same full history once more (an app's retry): nothing duplicated, one more answer
    again = app.chat.completions.create(model="echo-1", messages=msgs)
    assert again.choices[0].message.content == "echo: d"
    c = d.client()
    assert history(c, sid) == [
        ("system", "sys"),
        ("user", "a"),
        ("assistant", "echo: a"),
        ("user", "b c"),
        ("assistant", "echo: b c"),
        ("user", "d"),
        ("assistant", "echo: d"),
        ("assistant", "echo: d"),
    ]
    assert all(m.get("usage") for m in assistant(c, sid))
    assert [m.id for m in app.models.list().data] == ["echo-1", "echo-2"]
    # the key is required, and a wrong one is refused
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=info["base_url"], api_key="sk-wrong", max_retries=0).models.list()
    # provider errors reach the app as the SDK's own errors
    with pytest.raises(openai.NotFoundError):
        app.chat.completions.create(model="nope", messages=msgs + [{"role": "user", "content": "e"}])
    p.faults.status, p.faults.times, p.faults.retry_after = 429, 1, 3
    with pytest.raises(openai.RateLimitError) as e:
        app.chat.completions.create(model="echo-1", messages=msgs, stream=True)
    assert e.value.response.headers["Retry-After"] == "3"
    # a spent quota: the OpenAI error shape, status 429
    c.update_session(sid, token_quota=1)
    with pytest.raises(openai.RateLimitError) as e:
        app.chat.completions.create(model="echo-1", messages=msgs)
    assert e.value.code == "quota_exceeded" and e.value.status_code == 429
    # the key survives a restart (made once, on the first start)
    d.restart()
    assert open(_status(d)["api_key_file"]).read().strip() == key


@pytest.mark.parametrize(
    "authorization",
    [None, "", "Bearer", "Bearer ", "Bearer    ", "Basic {key}", "Token {key}", "{key}", "Bearer x{key}"],
    ids=["absent", "empty", "bearer-alone", "bearer-empty", "bearer-blank", "basic", "token", "no-scheme", "prefixed"],
)
def test_openai_listener_refuses_a_missing_key_in_openai_s_shape_and_changes_nothing(setup, authorization):
    make, p, _ = setup
    d = make(extra='openai_listen = "127.0.0.1:0"')
    info = _status(d)
    key = open(info["api_key_file"]).read().strip()
    c = d.client()
    sid = c.create_session(model="echo-1")["id"]
    before = (c.list_sessions(), history(c, sid))
    headers = {} if authorization is None else {"Authorization": authorization.format(key=key)}
    body = json.dumps({"model": "echo-1", "messages": [{"role": "user", "content": "let me in"}]})
    # http.client, not httpx: it sends a header value as given, trailing blanks included ("Bearer ")
    url = urllib.parse.urlsplit(info["base_url"])
    for method, path, extra, data in [
        ("POST", "/chat/completions", {"X-Sessiond-Session": sid}, body),
        ("POST", "/chat/completions", {}, body),  # would create a session
        ("GET", "/models", {}, None),
    ]:
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
        try:
            conn.request(
                method, url.path + path, body=data, headers={**headers, **extra, "Content-Type": "application/json"}
            )
            r = conn.getresponse()
            text = r.read().decode()
        finally:
            conn.close()
        assert r.status == 401, (method, path, r.status, text)
        err = json.loads(text)["error"]
        assert err["type"] == "authentication_error" and err["code"] == "invalid_api_key", err
        assert set(err) == {"message", "type", "param", "code"} and key not in text
    # nothing changed: no session made, nothing recorded, nothing sent to the provider
    assert (c.list_sessions(), history(c, sid)) == before
    assert p.requests == []


def test_openai_endpoint_on_the_socket_and_a_cut_stream(setup):
    make, p, _ = setup
    d = make()
    assert _status(d)["base_url"] is None  # no TCP listener unless configured
    http = httpx.Client(transport=httpx.HTTPTransport(uds=d.socket))
    sid = d.client().create_session(model="echo-1", system_prompt="sys")["id"]
    app = openai.OpenAI(
        base_url="http://localhost/openai/v1",
        api_key="unused",
        http_client=http,
        max_retries=0,
        default_headers={"X-Sessiond-Session": sid},
    )
    msgs = [{"role": "system", "content": "sys"}, {"role": "user", "content": "x y"}]
    r = app.chat.completions.create(model="echo-1", messages=msgs)
    assert r.choices[0].message.content == "echo: x y"
    # the session's own system prompt, sent by the app, is not stored as a message again
    assert history(d.client(), sid) == [("user", "x y"), ("assistant", "echo: x y")]
    p.faults.cut_after = 2
    msgs += [{"role": "assistant", "content": "echo: x y"}, {"role": "user", "content": "1 2 3 4"}]
    with pytest.raises(openai.APIError):
        list(app.chat.completions.create(model="echo-1", messages=msgs, stream=True))
    # the app sees the cut before the daemon has stored what came of the answer: wait for it
    wait_for(lambda: len(assistant(d.client(), sid)) == 2, timeout=20, what="the interrupted answer stored")
    a = assistant(d.client(), sid)
    assert len(a) == 2 and a[-1]["interrupted"] is True and a[-1]["content"] == "echo: 1"


# ---------------------------------------------------------------------------------------------- two devices
def test_started_on_one_device_continued_with_ask_on_the_other(setup, store_dir):
    make, p, _ = setup
    url = "file://" + store_dir
    a, b = make(url), make(url)
    ca, cb = a.client(), b.client()
    sid = ca.create_session(model="echo-1", system_prompt="Be kind.")["id"]
    ca.complete(sid, "from laptop")
    code = ca.share(sid, write=True)["code"]
    run_cli(b.home, "import", input=code, check=True)
    assert history(cb, sid) == history(ca, sid)
    res = run_cli(b.home, "ask", sid, "from phone", check=True)
    assert res.stdout == "echo: from phone\n"
    # the phone sent the whole conversation, laptop's exchange included
    assert [m["content"] for m in p.requests[-1]["messages"]] == [
        "Be kind.",
        "from laptop",
        "echo: from laptop",
        "from phone",
    ]
    t0 = time.monotonic()
    wait_for(
        lambda: history(ca, sid)[-2:] == [("user", "from phone"), ("assistant", "echo: from phone")],
        timeout=5,
        interval=0.02,
    )
    assert time.monotonic() - t0 < 1.0
    back = assistant(ca, sid)[-1]
    assert back["usage"] and back["provider"] == "loop" and back["device"] == b.client().status()["device_id"]
    assert ca.quota(sid)["tokens_used"] == cb.quota(sid)["tokens_used"]  # the usage counts alike on both


# ---------------------------------------------------------------------------------------------- configuration
@pytest.mark.parametrize(
    "text, says",
    [
        ('[providers.x]\nbase_url = "ftp://h"\n', "base_url must be an http"),
        ('[providers.x]\nbase_url = "http://h:1/v1"\napi_key_file = "/k"\napi_key_env = "K"\n', "not both"),
        ('[providers.x]\nbase_url = "http://h:1/v1"\ncolour = 1\n', "unknown key(s) colour"),
        # a top-level key appended after a table (`echo 'openai_listen = ...' >> config.toml`) lands in it
        ('[providers.x]\nbase_url = "http://h:1/v1"\nopenai_listen = "127.0.0.1:8765"\n', "above the first ["),
        ('default_provider = "y"\n[providers.x]\nbase_url = "http://h:1/v1"\n', "names no [providers.NAME]"),
        ('openai_listen = "nowhere"\n', "openai_listen must be"),
        ('openai_listen = "127.0.0.1:\u00b2"\n', "openai_listen must be"),  # (str.isdigit takes '²')
        ('[providers.x]\nbase_url = "http://h:1/v1"\ntimeout = -1\n', "timeout must be a positive"),
        ('[providers.x]\nbase_url = "http://h:1/v1"\nconnect_timeout = nan\n', "connect_timeout must be a positive"),
    ],
)
def test_bad_provider_config_is_a_clear_error(home, text, says):
    write_config(home, text)
    res = run_cli(home, "daemon", timeout=60)
    assert res.returncode == 2 and says in res.stderr and "Traceback" not in res.stderr


def test_an_api_key_written_in_config_toml_is_refused_saying_where_it_goes(tmp_path):
    """`api_key = "sk-..."` in a [providers.NAME] table (OpenAI's own examples' word) was refused as an unknown key
    with the allowed ones listed: not that the key is never written in config.toml, nor where it goes. Said so,
    the key quoted nowhere."""
    from sessiond.daemon.home import HomeError
    from sessiond.daemon.provider_config import check_providers

    key = "sk-proj-abcdefghijklmnopqrstuvwxyz0123"
    for name in ("api_key", "apikey", "key"):
        with pytest.raises(HomeError) as refused:
            check_providers(str(tmp_path / "config.toml"), {"x": {"base_url": "http://h:1/v1", name: key}}, ())
        message = str(refused.value)
        assert "api_key_file = " in message and "api_key_env = " in message and key not in message, message
        assert f"{name} is no setting: the key itself" in message, message


def test_an_api_key_or_a_providers_setting_at_the_top_of_config_toml_names_its_table(tmp_path):
    """`api_key = "sk-..."` at the top of config.toml (a newcomer's first try, with no [providers.NAME] table yet) was
    refused as "unknown setting 'api_key'" and the 17 top-level settings listed: neither that the key is never
    written there nor where it goes, as the same line in a provider's table is told; `api_key_file` or `base_url`
    there likewise, no word of the table they belong in. Each names its table, the key quoted nowhere."""
    from sessiond.daemon.home import Config, HomeError

    key = "sk-proj-abcdefghijklmnopqrstuvwxyz0123"
    for line, says in (
        (f'api_key = "{key}"', "api_key is no setting: the key itself"),
        ('api_key_file = "/x/key"', "api_key_file belongs in a [providers.NAME] table"),
        ('base_url = "http://127.0.0.1:8000/v1"', "base_url belongs in a [providers.NAME] table"),
    ):
        (tmp_path / "config.toml").write_text(line + "\n")
        with pytest.raises(HomeError) as refused:
            Config.load(str(tmp_path))
        message = str(refused.value)
        assert says in message and "[providers." in message and key not in message, message


def test_key_is_read_when_needed_and_never_stored(setup, tmp_path):
    make, p, server = setup
    p.key = "sk-test-secret-123"
    key_file = tmp_path / "key"
    key_file.write_text("sk-wrong\n")
    d = make(provider_extra=f'api_key_file = "{key_file}"\n')
    c = d.client()
    sid = c.create_session(model="echo-1")["id"]
    with pytest.raises(ApiError) as e:
        c.complete(sid, "hi")
    assert e.value.code == "provider_unauthorized"
    key_file.write_text(p.key + "\n")  # read again on the next request: no restart needed
    assert c.complete(sid, "hi")["content"] == "echo: hi"
    export = json.dumps(c.export(sid, "json"))
    assert p.key not in export and p.key not in json.dumps(c.status())
    with open(os.path.join(d.home, "sessions.db"), "rb") as f:
        assert p.key.encode() not in f.read()
    for name in os.listdir(os.path.join(d.home, "logs")):
        with open(os.path.join(d.home, "logs", name), "rb") as f:
            assert p.key.encode() not in f.read()
    # api_key_env: from the daemon's environment
    d2 = make(provider_extra='api_key_env = "SESSIOND_TEST_KEY_VAR"\n')
    res = run_cli(d2.home, "ask", d2.client().create_session(model="echo-1")["id"], "x")
    assert res.returncode == 1 and "SESSIOND_TEST_KEY_VAR" in res.stderr


def _files_holding(root: str, secret: bytes) -> list[str]:
    """Every file under `root` (a store folder, a home) whose bytes contain `secret`."""
    found = []
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            try:
                if not stat.S_ISREG(os.lstat(path).st_mode):
                    continue  # the socket
                with open(path, "rb") as f:
                    if secret in f.read():
                        found.append(path)
            except FileNotFoundError:
                continue  # a temporary file renamed meanwhile: its content is in the file it became
    return found


def test_a_provider_key_reaches_no_store_and_no_other_device(make_daemon, provider, store_dir, tmp_path):
    """A session that talked to a provider (its key from api_key_file on one device, api_key_env on the
    other) is pushed, shared read-write, imported, written to and followed both ways: no file of the
    folder store (objects, heads, members), no share code and no file of either home holds the key."""
    p, server = provider
    p.key = "sk-test-" + os.urandom(12).hex()
    key_file = tmp_path / "key"
    key_file.write_text(p.key + "\n")
    url = "file://" + store_dir
    a = make_daemon(url)
    write_config(a.home, config(server.port, provider_extra=f'api_key_file = "{key_file}"\n'))
    a.start()
    b = make_daemon(url, env={"SESSIOND_TEST_PROVIDER_KEY": p.key})
    write_config(b.home, config(server.port, provider_extra='api_key_env = "SESSIOND_TEST_PROVIDER_KEY"\n'))
    b.start()
    ca, cb = a.client(), b.client()
    sid = ca.create_session(model="echo-1", system_prompt="sys")["id"]
    assert ca.complete(sid, "one")["content"] == "echo: one"
    assert "".join(ca.complete_stream(sid, "two")) == "echo: two"
    ca.sync(sid, wait=True)
    code = ca.share(sid, write=True)["code"]
    assert p.key not in code
    cb.import_code(code)
    assert cb.complete(sid, "three")["content"] == "echo: three"
    cb.sync(sid, wait=True)

    def both_have_everything():
        ca.sync(sid, wait=True)
        cb.sync(sid, wait=True)
        return history(ca, sid) == history(cb, sid) and len(history(ca, sid)) == 6

    wait_for(both_have_everything, timeout=30, what="both devices holding the whole session")
    assert [r.get("model") for r in p.requests] == ["echo-1"] * 3  # each device did talk to it
    assert os.listdir(store_dir), "nothing was pushed"
    assert _files_holding(str(tmp_path), p.key.encode()) == [str(key_file)]  # the search finds it where it is
    for root in (store_dir, a.home, b.home):
        assert _files_holding(root, p.key.encode()) == [], root
    # after a clean stop too (the WAL checkpointed into sessions.db, logs flushed)
    a.stop()
    b.stop()
    for root in (store_dir, a.home, b.home):
        assert _files_holding(root, p.key.encode()) == [], root


@pytest.mark.skipif(
    not os.environ.get("SESSIOND_TEST_OPENAI_URL"),
    reason="set SESSIOND_TEST_OPENAI_URL (and SESSIOND_TEST_OPENAI_MODEL) to talk to a real OpenAI-compatible server",
)
def test_live_provider(make_daemon):
    url = os.environ["SESSIOND_TEST_OPENAI_URL"]
    model = os.environ.get("SESSIOND_TEST_OPENAI_MODEL", "llama3.2")
    d = make_daemon()
    extra = ""
    if os.environ.get("SESSIOND_TEST_OPENAI_KEY_ENV"):
        extra = f'api_key_env = "{os.environ["SESSIOND_TEST_OPENAI_KEY_ENV"]}"\n'
    write_config(d.home, f'default_provider = "live"\n[providers.live]\nbase_url = "{url}"\n{extra}')
    d.start()
    c = d.client()
    sid = c.create_session(model=model, settings={"max_tokens": 32})["id"]
    s = c.complete_stream(sid, "Say hello in three words.")
    text = "".join(s)
    assert text and s.message["content"] == text and s.message["tokens"] > 0


def test_a_question_past_the_idle_timeout_is_refused_before_the_model_is_asked(setup):
    # the question to a model meets the same expiry check as an append (storage/expiry.py past_expiry)
    make, p, _ = setup
    c = make(extra="cleanup_interval = 0").client()  # no clean-up loop: only the question can find it expired
    sid = c.create_session(model="echo-1", idle_timeout=3600)["id"]
    c.append(sid, "user", "hello")
    c.update_session(sid, idle_timeout=1)  # once it has its message (made with it, a slow append met the timeout)
    last = c.get_session(sid)["last_activity"]
    wait_for(lambda: time.time() > last + 1.1, timeout=10, what="the idle timeout")
    n = len(p.requests)
    with pytest.raises(ApiError) as e:
        c.complete(sid, "still there?")
    assert e.value.status == 409 and e.value.code == "expired" and "idle_timeout (1 s)" in e.value.message
    assert len(p.requests) == n and history(c, sid) == [("user", "hello")]


@pytest.mark.parametrize("stream", [False, True])
def test_an_answer_longer_than_the_idle_timeout_is_recorded_and_the_session_stays(setup, stream):
    """A model answering is the session's activity: a session whose idle timeout passes while its model
    answers (a slow or thinking model) is not ended under it, and the answer is recorded; the idle clock
    starts again from the answer. Was: the clean-up ended the session mid-answer and the answer, paid for
    and shown, was not recorded ("the answer above was not recorded: session ... has ended")."""
    make, p, _ = setup
    c = make().client()
    # the question must come within the idle timeout of the session's creation, and the look at its status
    # within the idle timeout of the answer: 2 s each (a loaded machine can hold the test a second)
    sid = c.create_session(model="echo-1", idle_timeout=2)["id"]
    p.faults.delay, p.faults.hang = 0.5, 0.0  # the fault itself: a slow model, its answer over 3 s
    if stream:
        answer = c.complete_stream(sid, "one two three four five six")
        assert "".join(answer) == "echo: one two three four five six"
        stored = answer.message
    else:
        p.faults.delay, p.faults.hang = 0.0, 3.0  # a model that thinks 3 s before its whole answer
        stored = c.complete(sid, "one two three four five six")
    assert stored is not None and stored["content"] == "echo: one two three four five six", stored
    assert c.get_session(sid)["status"] == "active"
    assert history(c, sid)[-1] == ("assistant", "echo: one two three four five six")
    # then idle for longer than its timeout: ended, as any idle session
    wait_for(lambda: c.get_session(sid)["status"] == "ended", timeout=10, what="the idle session ended")


@pytest.mark.parametrize("method,path", [("POST", "/openai/v1/chat/completions"), ("GET", "/openai/v1/models")])
def test_an_empty_session_header_of_the_openai_endpoint_is_refused_not_a_new_session(setup, method, path):
    """X-Sessiond-Session: "" (an app's variable left unset) names no session: a 422 naming the header, where
    it was read as absent, so the question made a new session and went on there, apart from the app's own
    (and the models listed were the default provider's, whatever the session's)."""
    from conftest import UnixHTTP

    make, p, _ = setup
    d = make()
    c = d.client()
    body = json.dumps({"model": "echo-1", "messages": [{"role": "user", "content": "hi"}]}).encode()
    http = UnixHTTP(d.socket, timeout=10)
    http.request(method, path, body=body if method == "POST" else None, headers={"X-Sessiond-Session": ""})
    r = http.getresponse()
    data = json.loads(r.read())
    http.close()
    assert r.status == 422 and "X-Sessiond-Session" in data["error"]["message"], data
    assert c.list_sessions()["sessions"] == []
