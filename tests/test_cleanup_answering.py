"""`sessiond cleanup` leaves a session whose model is answering: the answer is its activity, as the expiry's
clean-up already holds (was: a model answering for longer than --older-than left its session 'idle', and
cleanup deleted it mid-answer: the session, its question and the answer the provider was paid for, lost).
And it looks again at each delete, in the deleting transaction: a model that starts answering between the
clean-up's list and its delete keeps its session (was: looked at only when the list was made)."""

from __future__ import annotations

import os
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


def _streamed(d, sid: str, got: list) -> None:
    stream = d.client().complete_stream(sid)
    got.append(("".join(stream), stream.message))


@pytest.fixture
def held(make_daemon, tmp_path):
    """A daemon whose clean-up is held between its list and its deletes while FLAG is there, and a model
    whose streamed answer's first word comes 2 s after its question: (daemon, provider, FLAG)."""
    flag = str(tmp_path / "listed")
    p, server = serve_threaded(Provider())
    p.faults.first_delay = 2.0
    pause = {"SESSIOND_TEST_PAUSE": f"cleanup.listed:{flag}"}
    yield started_with_provider(lambda: make_daemon(env=pause), f"http://127.0.0.1:{server.port}/v1"), p, flag
    server.stop()


def test_cleanup_keeps_a_session_whose_model_starts_answering_after_the_list(held):
    d, p, flag = held
    c = d.client()
    sid = c.create_session(model="echo-1")["id"]
    c.append(sid, "user", "a b c")
    idle = c.create_session()["id"]
    cleaned: list = []
    t = threading.Thread(target=lambda: cleaned.append(d.client().cleanup(0)))
    t.start()
    wait_for(lambda: os.path.exists(flag), timeout=20, what="the clean-up held after its list")
    # the model asked to answer what is there (no new question: nothing is written before the answer)
    got: list = []
    asked = threading.Thread(target=_streamed, args=(d, sid, got))
    asked.start()
    wait_for(lambda: p.requests, timeout=20, what="the model asked")
    os.remove(flag)  # the clean-up goes on to its deletes, the model still answering
    t.join(timeout=30)
    assert cleaned and [s["id"] for s in cleaned[0]["sessions"]] == [idle], cleaned
    asked.join(timeout=30)
    assert got and got[0][0] == "echo: a b c" and got[0][1]["content"] == "echo: a b c", got
    assert [m["role"] for m in c.messages(sid)["messages"]] == ["user", "assistant"]
