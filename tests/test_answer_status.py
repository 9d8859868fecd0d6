"""A session paused or ended while a model is answering (`sessiond ask`): the answer to a question the
session took is recorded when it was paused meanwhile (a pause stops new questions, not an answer already
paid for), and refused, saying so, when it was ended (its final checkpoint is made): never lost without a
word, nor told as a broken connection."""

from __future__ import annotations

import os
import subprocess
import threading

import openai
import pytest

try:  # the openai package's own HTTP library: httpx, renamed httpx2 in its newer releases
    import httpx2 as httpx
except ImportError:
    import httpx

from conftest import PY, DaemonProc, wait_for
from servers.openai_server import Provider, serve_threaded


@pytest.fixture
def slow(make_daemon):
    """A daemon whose provider answers each question only once `p.resume` is set (a model thinking, held):
    (daemon, provider). Was: a word every 0.4 s, the session paused or ended within the 2 s the answer took,
    a window of time that a stall of the test past it (a loaded CI machine) closed: the answer recorded first."""
    p, server = serve_threaded(Provider())
    p.faults.held = True
    d = make_daemon()
    os.makedirs(d.home, mode=0o700)
    with open(os.path.join(d.home, "config.toml"), "w") as f:
        f.write(f'default_provider = "loop"\n[providers.loop]\nbase_url = "http://127.0.0.1:{server.port}/v1"\n')
    d.start()
    yield d, p
    p.resume.set()
    server.stop()


def _ask_while(d: DaemonProc, p: Provider, sid: str, question: str, meanwhile) -> subprocess.CompletedProcess:
    """`sessiond ask` of `question`; `meanwhile()` once the model is asked (the question recorded before it),
    then the model let go."""
    asked = len(p.requests)
    out: list[subprocess.CompletedProcess] = []
    cmd = [PY, "-m", "sessiond.cli.main", "ask", sid, question, "--home", d.home]
    t = threading.Thread(target=lambda: out.append(subprocess.run(cmd, capture_output=True, text=True, timeout=60)))
    t.start()
    try:
        wait_for(lambda: len(p.requests) > asked or not t.is_alive(), timeout=30, what="the model asked")
        meanwhile()
    finally:
        p.resume.set()
        t.join(timeout=60)
    return out[0]


def test_an_answer_is_recorded_when_the_session_was_paused_meanwhile(slow):
    d, p = slow
    c = d.client()
    sid = c.create_session(model="echo-1")["id"]
    res = _ask_while(d, p, sid, "a b c d e", lambda: c.pause(sid))
    assert res.returncode == 0 and res.stdout == "echo: a b c d e\n", (res.returncode, res.stdout, res.stderr)
    assert [(m["role"], m["content"]) for m in c.messages(sid)["messages"]] == [
        ("user", "a b c d e"),
        ("assistant", "echo: a b c d e"),
    ]
    assert c.get_session(sid)["status"] == "paused"
    with pytest.raises(Exception) as e:  # paused: no new question
        c.complete(sid, "more")
    assert "paused" in str(e.value)


def test_an_answer_to_a_session_ended_meanwhile_is_refused_saying_so(slow):
    d, p = slow
    c = d.client()
    sid = c.create_session(model="echo-1")["id"]
    res = _ask_while(d, p, sid, "a b c d e", lambda: c.end(sid))
    assert res.returncode == 1, (res.returncode, res.stdout, res.stderr)
    assert "not recorded" in res.stderr and "has ended" in res.stderr, res.stderr
    assert "connection to the daemon broke" not in res.stderr, res.stderr
    assert [m["role"] for m in c.messages(sid)["messages"]] == ["user"]  # the end's proofs stand


def test_a_whole_answer_to_a_session_ended_meanwhile_says_it_was_not_recorded(slow):
    """The same without a stream (the socket route and the OpenAI endpoint): the refusal says that the
    model's answer is what was not recorded, not only that the session has ended."""
    d, p = slow
    c = d.client()
    for how in ("route", "openai"):
        sid = c.create_session(model="echo-1")["id"]
        out: list = []
        p.resume.clear()  # (the model held again: the last question's answer is in)
        asked = len(p.requests)

        def ask(sid=sid, how=how):
            try:
                if how == "route":  # (a client of its own: one is not shared between threads)
                    d.client().complete(sid, "a b c d e")
                else:
                    app = openai.OpenAI(
                        base_url="http://localhost/openai/v1",
                        api_key="unused",
                        http_client=httpx.Client(transport=httpx.HTTPTransport(uds=d.socket)),
                        max_retries=0,
                        default_headers={"X-Sessiond-Session": sid},
                    )
                    app.chat.completions.create(model="echo-1", messages=[{"role": "user", "content": "a b c d e"}])
            except Exception as exc:  # what the client raised is the subject
                out.append(exc)

        t = threading.Thread(target=ask)
        t.start()
        # the model asked and the question recorded (the OpenAI endpoint records it while the model thinks)
        wait_for(
            lambda sid=sid: len(p.requests) > asked and len(c.messages(sid)["messages"]) == 1,
            timeout=30,
            what="the model asked",
        )
        c.end(sid)
        p.resume.set()  # the model answers now, the session ended
        t.join(timeout=60)
        assert out and "answer was not recorded" in str(out[0]) and "ended" in str(out[0]), (how, out)
        # and the answer is in the refusal: the Python client's ApiError.answer, the OpenAI error's completion
        if how == "route":
            assert out[0].answer["content"] == "echo: a b c d e", out[0].details
        else:
            assert out[0].body["completion"]["choices"][0]["message"]["content"] == "echo: a b c d e", out[0].body
        assert [m["role"] for m in c.messages(sid)["messages"]] == ["user"]
