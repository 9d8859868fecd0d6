"""kill -9 while the model answers a request that made its session (an OpenAI app's call naming none). The session,
holding the request's question alone, was kept by the start after: its app never had its id (the answer's header,
never sent) and the SDK's retry of the broken connection, the same request naming no session, made a second session
holding the question again (the one kept holding it alone for good). As when the model fails it or its app leaves
(openai_cut.drop_made), the start deletes it if it holds nothing else; a stream whose head, naming the session, was
sent keeps it (the app may go on in it)."""

from __future__ import annotations

import http.client
import json
import os
import sqlite3
import threading
import time
from urllib.parse import urlsplit

import pytest

from conftest import arrived, cli_json, flag_dir, openai_app, openai_paused, started_with_provider
from servers.openai_server import Provider, serve_threaded

Q = [{"role": "user", "content": "count"}]


def _questions(c) -> list[list[str]]:
    return sorted([m["content"] for m in c.messages(s["id"])["messages"]] for s in c.list_sessions()["sessions"])


def _asking(d, messages: list[dict]) -> threading.Thread:
    """An app's request of `messages` naming no session, in a thread of its own, cut by the daemon's kill."""

    def cut() -> None:
        try:
            openai_app(d, None).chat.completions.create(model="echo-1", messages=messages)
        except Exception:  # (the daemon killed under it: the connection broken)
            pass

    t = threading.Thread(target=cut)
    t.start()
    return t


def _held_question(d, p) -> threading.Thread:
    """`_asking` Q, the model thinking until the daemon is killed; returned once the session is made and its question
    recorded."""
    p.faults.held = True
    t = _asking(d, Q)
    c, deadline = d.client(), time.monotonic() + 10
    while _questions(c) != [["count"]]:
        assert time.monotonic() < deadline, "the question never recorded"
        time.sleep(0.02)
    return t


def test_a_kill_while_the_model_answers_leaves_no_session_holding_the_question_alone(make_daemon):
    p, server = serve_threaded(Provider())
    try:
        d = started_with_provider(make_daemon, f"http://127.0.0.1:{server.port}/v1", openai_listen="127.0.0.1:0")
        t = _held_question(d, p)  # the session made, its question recorded, the model thinking
        c = d.client()
        d.kill()
        p.resume.set()
        t.join(30)
        d.start()
        c = d.client()
        assert _questions(c) == []  # deleted at the start: it held the question alone
        p.faults.held = False
        retry = {"x-stainless-retry-count": "1"}  # (the SDK's retry of the broken connection, as it sends it)
        openai_app(d, None).chat.completions.create(model="echo-1", messages=Q, extra_headers=retry)
        assert _questions(c) == [["count", "echo: count"]]
        # a stream whose head was sent: the app has the session's id, and keeps it
        p.faults.script, p.faults.script_wait = [({"content": "late"}, "stop")], 0  # the role chunk, then it thinks
        p.resume.clear()
        info = cli_json(d.home, "status")["openai"]
        url, key = urlsplit(info["base_url"]), open(info["api_key_file"]).read().strip()
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
        body = json.dumps({"model": "echo-1", "messages": [{"role": "user", "content": "streamed"}], "stream": True})
        conn.request("POST", url.path + "/chat/completions", body, {"Authorization": f"Bearer {key}"})
        resp = conn.getresponse()
        sid = resp.getheader("X-Sessiond-Session")
        assert resp.status == 200 and resp.readline().startswith(b"data: ")  # the stream begun, the session named
        d.kill()
        conn.close()
        p.resume.set()
        d.start()
        assert [m["content"] for m in d.client().messages(sid)["messages"]] == ["streamed"]
        assert _questions(d.client()) == [["count", "echo: count"], ["streamed"]]
        db = sqlite3.connect(f"file:{os.path.join(d.home, 'sessions.db')}?mode=ro", uri=True)
        try:  # (no row left of a request that ended, nor of a stream whose head was sent)
            assert db.execute("SELECT count(*) FROM openai_made").fetchone() == (0,)
        finally:
            db.close()
    finally:
        p.resume.set()
        server.stop()


def test_a_kill_as_the_question_is_recorded_leaves_no_session_holding_it_alone(make_daemon):
    """The session's row was written in a transaction of its own after the question's: a kill between the two (the
    provider asked, the app given nothing) left the session holding the question alone for good, its retry making
    a second, as before openai_made. Written in the question's transaction, the start deletes it."""
    p, server = serve_threaded(Provider())
    flag = flag_dir() + "/recorded"
    try:
        d = openai_paused(make_daemon, server.port, f"openai.question_recorded:{flag}")
        t = _asking(d, [{"role": "system", "content": "terse"}, *Q])  # (the lamports of both: its row's range)
        arrived(flag)  # the question committed, the provider asked
        d.kill()
        t.join(30)
        del d.env["SESSIOND_TEST_PAUSE"]
        d.start()
        assert _questions(d.client()) == []
    finally:
        server.stop()


@pytest.mark.parametrize("written", [False, True])
def test_a_kill_between_the_sessions_making_and_its_question_leaves_no_empty_session(make_daemon, written):
    """A kill after the request made its session and before its question's append: the session, holding nothing, had
    no openai_made row yet (written in the question's transaction) and was kept, an empty "openai app" for good, the
    SDK's retry making another. Its row written in the creating transaction, the start deletes it; but not one
    another app wrote to meanwhile (`written`: its id in `ls` and the events from its making on)."""
    p, server = serve_threaded(Provider())
    flag = flag_dir() + "/made"
    try:
        d = openai_paused(make_daemon, server.port, f"openai.made:{flag}")
        t = _asking(d, Q)
        arrived(flag)  # the session committed, its question not recorded
        if written:
            c = d.client()
            c.append(c.list_sessions()["sessions"][0]["id"], "user", "a note of mine")
        d.kill()
        t.join(30)
        del d.env["SESSIOND_TEST_PAUSE"]
        d.start()
        c = d.client()
        assert _questions(c) == ([["a note of mine"]] if written else [])
        if written:
            return
        retry = {"x-stainless-retry-count": "1"}  # (the SDK's retry: the one session, holding the question once)
        openai_app(d, None).chat.completions.create(model="echo-1", messages=Q, extra_headers=retry)
        assert _questions(c) == [["count", "echo: count"]]
    finally:
        server.stop()


def test_a_checkpoint_asked_for_keeps_the_session_a_kill_cut(make_daemon):
    """A checkpoint an app or the user asked for of the session a request made (its id in `ls` and the events) while
    the model answered: its proof given, the session is no longer the request's alone to drop. The start deleted it
    (a checkpoint is not written beside the question: the daemon's own automatic ones are not), the proof naming a
    session gone."""
    p, server = serve_threaded(Provider())
    try:
        d = started_with_provider(make_daemon, f"http://127.0.0.1:{server.port}/v1", openai_listen="127.0.0.1:0")
        t = _held_question(d, p)  # the session made, its question recorded, the model thinking
        c = d.client()
        sid = c.list_sessions()["sessions"][0]["id"]
        proof = c.checkpoint(sid)
        d.kill()
        p.resume.set()
        t.join(30)
        d.start()
        c = d.client()
        assert _questions(c) == [["count"]]
        assert c.verify_proof(sid, {k: x for k, x in proof.items() if k != "made"})["ok"] is True
    finally:
        p.resume.set()
        server.stop()
