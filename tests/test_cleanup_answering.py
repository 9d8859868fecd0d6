"""`sessiond cleanup` leaves a session whose model is answering: the answer is its activity, as the expiry's
clean-up already holds (was: a model answering for longer than --older-than left its session 'idle', and
cleanup deleted it mid-answer: the session, its question and the answer the provider was paid for, lost)."""

from __future__ import annotations

import threading
import time

import pytest

from conftest import started_with_provider, wait_for
from servers.openai_server import Provider, serve_threaded


@pytest.fixture
def slow(make_daemon):
    p, server = serve_threaded(Provider())
    p.faults.hang = 3.0  # the whole answer 3 s after the question
    yield started_with_provider(make_daemon, f"http://127.0.0.1:{server.port}/v1"), p
    server.stop()


def test_cleanup_passes_by_a_session_whose_model_is_answering(slow):
    d, _ = slow
    c = d.client()
    sid = c.create_session(model="echo-1")["id"]
    idle = c.create_session()["id"]
    got: list = []
    t = threading.Thread(target=lambda: got.append(d.client().complete(sid, "a b c")))
    t.start()
    wait_for(lambda: len(c.messages(sid)["messages"]) == 1, timeout=30, what="the question")
    asked = c.messages(sid)["messages"][0]["created_at"]
    # the question over a second old, the model still answering (its answer comes 3 s after it)
    wait_for(lambda: time.time() > asked + 1.3, timeout=30, what="a second since the question")
    assert not got and t.is_alive()
    assert [s["id"] for s in c.cleanup(1, dry_run=True)["sessions"]] == [idle]
    res = c.cleanup(1)
    assert [s["id"] for s in res["sessions"]] == [idle], res
    t.join(timeout=30)
    assert got and got[0]["content"] == "echo: a b c", got
    assert [m["role"] for m in c.messages(sid)["messages"]] == ["user", "assistant"]
