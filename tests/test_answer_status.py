"""A session paused or ended while a model is answering (`sessiond ask`): the answer to a question the
session took is recorded when it was paused meanwhile (a pause stops new questions, not an answer already
paid for), and refused, saying so, when it was ended (its final checkpoint is made): never lost without a
word, nor told as a broken connection."""

from __future__ import annotations

import os
import subprocess
import threading

import pytest

from conftest import PY, DaemonProc, wait_for
from servers.openai_server import Provider, serve_threaded


@pytest.fixture
def slow(make_daemon):
    """A daemon whose provider answers a word every 0.4 s: (daemon, provider)."""
    p, server = serve_threaded(Provider())
    p.faults.delay = 0.4
    d = make_daemon()
    os.makedirs(d.home, mode=0o700)
    with open(os.path.join(d.home, "config.toml"), "w") as f:
        f.write(f'default_provider = "loop"\n[providers.loop]\nbase_url = "http://127.0.0.1:{server.port}/v1"\n')
    d.start()
    yield d, p
    server.stop()


def _ask_while(d: DaemonProc, sid: str, question: str, meanwhile) -> subprocess.CompletedProcess:
    """`sessiond ask` of `question`; `meanwhile()` once the question is recorded (the model answering)."""
    c = d.client()
    before = len(c.messages(sid)["messages"])
    out: list[subprocess.CompletedProcess] = []
    cmd = [PY, "-m", "sessiond.cli.main", "ask", sid, question, "--home", d.home]
    t = threading.Thread(target=lambda: out.append(subprocess.run(cmd, capture_output=True, text=True, timeout=60)))
    t.start()
    try:
        wait_for(lambda: len(c.messages(sid)["messages"]) > before or not t.is_alive(), timeout=30, what="the question")
        meanwhile()
    finally:
        t.join(timeout=60)
    return out[0]


def test_an_answer_is_recorded_when_the_session_was_paused_meanwhile(slow):
    d, p = slow
    c = d.client()
    sid = c.create_session(model="echo-1")["id"]
    res = _ask_while(d, sid, "a b c d e", lambda: c.pause(sid))
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
    res = _ask_while(d, sid, "a b c d e", lambda: c.end(sid))
    assert res.returncode == 1, (res.returncode, res.stdout, res.stderr)
    assert "not recorded" in res.stderr and "has ended" in res.stderr, res.stderr
    assert "connection to the daemon broke" not in res.stderr, res.stderr
    assert [m["role"] for m in c.messages(sid)["messages"]] == ["user"]  # the end's proofs stand
