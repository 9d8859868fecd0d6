"""The OpenAI-compatible endpoint wrote every call to its session's current chat: an SDK app keeping several
chats in one session had to switch chats through the socket API before each call, racing any other app or
device that switched meanwhile. A request names its chat with the X-Sessiond-Chat header (an id or a name,
as the CLI picks chats), answered back with the chat's id in the response's own X-Sessiond-Chat: the request
reads that chat's history, system prompt and settings and appends to it, and the session's current chat
stays as it was. Driven with the official `openai` client, over TCP (openai_listen) and the socket."""

from __future__ import annotations

import http.client
import json
import threading
import urllib.parse

import openai
import pytest

from conftest import cli_json, started_with_provider, wait_for
from servers.openai_server import Faults, Provider, serve_threaded

try:  # the openai package's own HTTP library: httpx, renamed httpx2 in its newer releases
    import httpx2 as httpx
except ImportError:
    import httpx


@pytest.fixture
def served(make_daemon):
    p, server = serve_threaded(Provider())
    d = started_with_provider(make_daemon, f"http://127.0.0.1:{server.port}/v1", openai_listen="127.0.0.1:0")
    yield d, p
    server.stop()


def _app(d, headers: dict, via: str = "tcp") -> openai.OpenAI:
    """The official client, as an app uses it, on the TCP listener or on the daemon's socket."""
    if via == "socket":
        return openai.OpenAI(
            base_url="http://localhost/openai/v1",
            api_key="unused",
            http_client=httpx.Client(transport=httpx.HTTPTransport(uds=d.socket)),
            max_retries=0,
            default_headers=headers,
        )
    info = cli_json(d.home, "status")["openai"]
    return openai.OpenAI(
        base_url=info["base_url"],
        api_key=open(info["api_key_file"]).read().strip(),
        max_retries=0,
        default_headers=headers,
    )


def _ask(app: openai.OpenAI, history: list, stream: bool) -> tuple[str, httpx.Headers]:
    """The model's answer to `history` and the response's headers."""
    raw = app.chat.completions.with_raw_response.create(model="echo-1", messages=history, stream=stream)
    if stream:
        text = "".join(ch.choices[0].delta.content or "" for ch in raw.parse() if ch.choices)
    else:
        text = raw.parse().choices[0].message.content
    return text, raw.headers


def _texts(c, sid: str, chat: str) -> list[tuple[str, str]]:
    return [(m["role"], m["content"]) for m in c.messages(sid, chat=chat)["messages"]]


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("via", ["tcp", "socket"])
def test_the_named_chat_gets_the_call_and_the_current_chat_stays(served, via, stream):
    d, p = served
    c = d.client()
    sid = c.create_session(model="echo-1", system_prompt="the session's")["id"]
    side = c.create_chat(sid, name="side", system_prompt="be brief", settings={"temperature": 0.25})["id"]
    for ref in ("side", side):  # by its name, then by its id: the same chat
        app = _app(d, {"X-Sessiond-Session": sid, "X-Sessiond-Chat": ref}, via)
        history = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "one"}]
        if ref == side:  # the app's history so far, resent whole: only what is new is stored
            history += [{"role": "assistant", "content": "echo: one"}, {"role": "user", "content": "two"}]
        text, headers = _ask(app, history, stream)
        assert text == "echo: " + history[-1]["content"]
        assert headers["X-Sessiond-Session"] == sid and headers["X-Sessiond-Chat"] == side, dict(headers)
        assert p.requests[-1].get("temperature") == 0.25, p.requests[-1]  # the chat's own settings
    # the chat's system prompt was matched (not stored again), and its history was the one matched
    assert _texts(c, sid, side) == [
        ("user", "one"),
        ("assistant", "echo: one"),
        ("user", "two"),
        ("assistant", "echo: two"),
    ]
    session = c.get_session(sid)
    assert session["current_chat"] == "main", session
    assert _texts(c, sid, "main") == []
    # without the header, the current chat as before, and its id answered back too
    text, headers = _ask(_app(d, {"X-Sessiond-Session": sid}, via), [{"role": "user", "content": "m"}], stream)
    assert text == "echo: m" and headers["X-Sessiond-Chat"] == "main", dict(headers)
    assert _texts(c, sid, "main") == [("user", "m"), ("assistant", "echo: m")]


def test_two_apps_on_two_chats_of_one_session_at_once(make_daemon):
    p, server = serve_threaded(Provider(faults=Faults(held=True)))
    try:
        d = started_with_provider(make_daemon, f"http://127.0.0.1:{server.port}/v1", openai_listen="127.0.0.1:0")
        c = d.client()
        sid = c.create_session(model="echo-1")["id"]
        for name in ("a", "b"):
            c.create_chat(sid, id=name)
        histories: dict[str, list] = {"a": [], "b": []}
        failed: list = []

        def turn(chat: str, n: int, stream: bool) -> None:
            try:
                app = _app(d, {"X-Sessiond-Session": sid, "X-Sessiond-Chat": chat})
                h = histories[chat]
                h.append({"role": "user", "content": f"{chat} {n}"})
                text, headers = _ask(app, h, stream)
                assert headers["X-Sessiond-Chat"] == chat
                h.append({"role": "assistant", "content": text})
            except Exception as exc:  # the thread's failure is the test's
                failed.append(exc)

        for n in range(3):
            p.resume.clear()
            before = len(p.requests)
            threads = [threading.Thread(target=turn, args=(chat, n, chat == "b")) for chat in ("a", "b")]
            for t in threads:
                t.start()
            # both questions at the model at once, each app's history its own
            wait_for(lambda before=before: len(p.requests) == before + 2, timeout=30, what="both apps' questions")
            # another app switches the session's current chat meanwhile: no matter to either
            c.switch_chat(sid, "a" if n % 2 else "b")
            p.resume.set()
            for t in threads:
                t.join(30)
            assert not failed, failed
        for chat in ("a", "b"):
            want = []
            for n in range(3):
                want += [("user", f"{chat} {n}"), ("assistant", f"echo: {chat} {n}")]
            assert _texts(c, sid, chat) == want, chat
        assert _texts(c, sid, "main") == []
    finally:
        p.resume.set()
        server.stop()


def _sessions(c) -> int:
    return len(c.list_sessions()["sessions"])


def test_refusals(served):
    d, p = served
    c = d.client()
    sid = c.create_session(model="echo-1")["id"]
    q = [{"role": "user", "content": "q"}]
    asked = len(p.requests)
    # an unknown chat: 404, naming where the chats are listed and the header
    with pytest.raises(openai.NotFoundError) as nf:
        _app(d, {"X-Sessiond-Session": sid, "X-Sessiond-Chat": "nosuch"}).chat.completions.create(
            model="echo-1", messages=q
        )
    said = nf.value.body["message"]
    assert f"sessiond chat ls {sid}" in said and "X-Sessiond-Chat" in said and "'nosuch'" in said, said
    assert nf.value.response.headers["X-Sessiond-Session"] == sid
    # an empty header names no chat: refused, not read as the current one
    with pytest.raises(openai.UnprocessableEntityError) as empty:
        _app(d, {"X-Sessiond-Session": sid, "X-Sessiond-Chat": ""}).chat.completions.create(model="echo-1", messages=q)
    assert "X-Sessiond-Chat is empty" in empty.value.body["message"], empty.value.body
    # a chat without its session: a new session has only its first chat; refused, no session made
    n = _sessions(c)
    with pytest.raises(openai.UnprocessableEntityError) as alone:
        _app(d, {"X-Sessiond-Chat": "main"}).chat.completions.create(model="echo-1", messages=q)
    assert "X-Sessiond-Session" in alone.value.body["message"], alone.value.body
    assert _sessions(c) == n
    assert len(p.requests) == asked and _texts(c, sid, "main") == []  # nothing asked, nothing stored
    # a chat of an ended session: the session's own refusal (a 400 the SDK does not retry)
    c.create_chat(sid, id="side")
    c.end(sid)
    with pytest.raises(openai.BadRequestError) as ended:
        _app(d, {"X-Sessiond-Session": sid, "X-Sessiond-Chat": "side"}).chat.completions.create(
            model="echo-1", messages=q
        )
    assert ended.value.code == "conflict" and "ended" in ended.value.body["message"], ended.value.body
    assert len(p.requests) == asked


def test_a_chat_named_outside_ascii(served):
    """A name outside ASCII, sent as its UTF-8 bytes (as curl sends it; the SDK's HTTP library sends ASCII
    headers only, so an SDK app names such a chat by its id), picks the chat; the answer names it by its id."""
    d, p = served
    c = d.client()
    sid = c.create_session(model="echo-1")["id"]
    cid = c.create_chat(sid, name="résumé")["id"]
    info = cli_json(d.home, "status")["openai"]
    url = urllib.parse.urlsplit(info["base_url"])
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    try:
        body = json.dumps({"model": "echo-1", "messages": [{"role": "user", "content": "é"}]}).encode()
        conn.putrequest("POST", url.path + "/chat/completions")
        conn.putheader("Authorization", "Bearer " + open(info["api_key_file"]).read().strip())
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Content-Length", str(len(body)))
        conn.putheader("X-Sessiond-Session", sid)
        conn.putheader("X-Sessiond-Chat", "résumé".encode())
        conn.endheaders(body)
        r = conn.getresponse()
        answer = json.loads(r.read())
        assert r.status == 200, answer
        assert r.headers["X-Sessiond-Chat"] == cid
    finally:
        conn.close()
    assert _texts(c, sid, cid) == [("user", "é"), ("assistant", "echo: é")]
