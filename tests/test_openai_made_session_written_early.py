"""The session an OpenAI request made (no X-Sessiond-Session) is deleted when nothing of the answer is kept (the
provider's failure, the daemon's stop, the app leaving), but only if nothing else was written to it: its id is
another app's as soon as it is made (`sessiond ls`, the `session.created` event). The check was "nothing written
after the request's question": a note another app appended between the session's making and the question's
recording (the request has left for the provider then, the question commits while the model thinks) was older than
the question, and deleted with it. (The daemon is held where the request has left and the question is not recorded
yet.)"""

from __future__ import annotations

import concurrent.futures
import http.client
import json
import os
import time
from urllib.parse import urlsplit

import openai
import pytest

from conftest import arrived, cli_json, openai_app, openai_paused


@pytest.mark.parametrize("stream", [False, True])
def test_a_note_written_before_the_question_is_recorded_keeps_the_made_session(asked_paused, stream):
    d, p, flag = asked_paused
    c = d.client()
    p.faults.status, p.faults.times = 500, 1  # the provider fails before any answer
    app = openai_app(d, None)
    q = [{"role": "user", "content": "count"}]
    with concurrent.futures.ThreadPoolExecutor(1) as pool:

        def ask():
            res = app.chat.completions.create(model="echo-1", messages=q, stream=stream)
            return list(res) if stream else res

        call = pool.submit(ask)
        arrived(flag)  # the session made, the request sent on; its question not recorded yet
        [s] = c.list_sessions()["sessions"]
        c.append(s["id"], "user", "a note of mine")
        os.remove(flag)
        with pytest.raises(openai.APIError):
            call.result(timeout=30)
    [s] = c.list_sessions()["sessions"]  # kept, with the note and the question
    assert sorted(m["content"] for m in c.messages(s["id"])["messages"]) == ["a note of mine", "count"]


def test_a_question_under_way_to_the_made_session_keeps_it(asked_paused):
    """Another app's question to the made session (named by its id) is under way, sent on to the model and not
    recorded yet, when the request that made it ends with nothing of its answer (its app gone): the session was
    deleted under that question, whose model was asked (billed) and whose answer was then refused, the session
    gone. A session with another question to its model under way is kept."""
    d, p, flag = asked_paused
    c = d.client()
    p.faults.held = True  # each model thinks until let go
    first, made = _asked_by_an_app_that_will_leave(d, flag)
    other = openai_app(d, made)
    q = [{"role": "user", "content": "count"}, {"role": "user", "content": "and mine"}]
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        call = pool.submit(other.chat.completions.create, model="echo-1", messages=q)
        arrived(flag)  # the other app's question sent on to the model, not recorded yet
        first.close()  # the first app leaves, nothing of its answer given
        deadline = time.monotonic() + 10
        while c.list_sessions()["sessions"] and not _said_kept(d.home):  # (deleted, or said kept)
            assert time.monotonic() < deadline, "the first request never ended"
            time.sleep(0.05)
        os.remove(flag)
        p.resume.set()
        answer = call.result(timeout=30).choices[0].message.content
    assert answer.startswith("echo: "), answer
    [s] = c.list_sessions()["sessions"]
    assert [m["content"] for m in c.messages(s["id"])["messages"]][:2] == ["count", "and mine"]


def _asked_by_an_app_that_will_leave(d, flag: str | None = None) -> tuple[http.client.HTTPConnection, str]:
    """An app's question ("count") with no X-Sessiond-Session, on a connection of its own (which the test closes: the
    app leaving), let go at the test pause `flag` if given: the connection, and the session it made once its question
    is recorded (its model thinking)."""
    info = cli_json(d.home, "status")["openai"]
    url, key = urlsplit(info["base_url"]), open(info["api_key_file"]).read().strip()
    first = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    body = {"model": "echo-1", "messages": [{"role": "user", "content": "count"}]}
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    first.request("POST", url.path.rstrip("/") + "/chat/completions", json.dumps(body), headers)
    if flag is not None:
        arrived(flag)
        os.remove(flag)
    c, deadline = d.client(), time.monotonic() + 10
    while not (made := c.list_sessions()["sessions"]) or not c.messages(made[0]["id"])["messages"]:
        assert time.monotonic() < deadline, "the first question never recorded"
        time.sleep(0.02)
    return first, made[0]["id"]


def _said_kept(home: str) -> bool:
    try:
        with open(os.path.join(home, "logs", "sessiond.log")) as f:
            return "the session an OpenAI request made is kept" in f.read()
    except FileNotFoundError:
        return False


def test_a_question_waiting_for_the_made_session_s_left_answer_keeps_it(make_daemon, tmp_path):
    """Another app's question to the made session arrived while the app that made it had just left (its SDK's timeout
    while the model thought): the question waits for that request's end (Answering.settle: what an app that left
    caused comes first) but was not counted as under way meanwhile, so the session was deleted under it, and the
    question, sent to a session it had named and seen, was refused 404. A question waiting so keeps the session."""
    from servers.openai_server import Provider, serve_threaded

    deleting, settling = str(tmp_path / "deleting"), str(tmp_path / "settling")
    p, server = serve_threaded(Provider())
    try:
        d = openai_paused(make_daemon, server.port, f"delete.lock:{deleting},answering.settle:{settling}")
        c = d.client()
        p.faults.held = True  # the model thinks until let go
        first, made = _asked_by_an_app_that_will_leave(d)
        other = openai_app(d, made)
        first.close()  # the first app leaves, nothing of its answer given
        arrived(deleting)  # its session about to be deleted
        q = [{"role": "user", "content": "count"}, {"role": "user", "content": "and mine"}]
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            call = pool.submit(other.chat.completions.create, model="echo-1", messages=q)
            arrived(settling)  # the other app's question waits for the first request's end
            os.remove(deleting)
            deadline = time.monotonic() + 10
            while c.list_sessions()["sessions"] and not _said_kept(d.home):  # (deleted, or said kept)
                assert time.monotonic() < deadline, "the first request never ended"
                time.sleep(0.05)
            p.resume.set()
            os.remove(settling)
            answer = call.result(timeout=30).choices[0].message.content
    finally:
        p.resume.set()
        server.stop()
    assert answer == "echo: and mine", answer
    [s] = c.list_sessions()["sessions"]
    assert [m["content"] for m in c.messages(s["id"])["messages"]] == ["count", "and mine", answer]


@pytest.mark.parametrize("stream", [False, True])
def test_the_sdk_s_retry_of_a_502_goes_on_in_the_made_session_kept(asked_paused, stream):
    """The provider's 502 ends a request that made a session, which is kept (another app wrote to it meanwhile: not
    deleted under that app) and named in the 502's header, which no SDK reads: the official client's own retry, the
    same request without X-Sessiond-Session, made a second session holding the question again. The retry (its
    `x-stainless-retry-count`, the same body) goes on in the session its first try made."""
    d, p, flag = asked_paused
    c = d.client()
    p.faults.status, p.faults.times = 502, 2  # the first try and the SDK's first retry fail; its second is answered
    info = cli_json(d.home, "status")["openai"]
    app = openai.OpenAI(base_url=info["base_url"], api_key=open(info["api_key_file"]).read().strip(), max_retries=2)
    q = [{"role": "user", "content": "count"}]
    with concurrent.futures.ThreadPoolExecutor(1) as pool:

        def ask():
            raw = app.chat.completions.with_raw_response.create(model="echo-1", messages=q, stream=stream)
            res = raw.parse()
            text = "".join(ch.choices[0].delta.content or "" for ch in res if ch.choices) if stream else None
            return raw.headers.get("X-Sessiond-Session"), text or res.choices[0].message.content

        call = pool.submit(ask)
        arrived(flag)  # the session made, the request sent on; its question not recorded yet
        [s] = c.list_sessions()["sessions"]
        c.append(s["id"], "user", "a note of mine")
        os.remove(flag)
        for _ in range(2):
            arrived(flag)  # an SDK's retry, sent on
            os.remove(flag)
        named, answer = call.result(timeout=30)
    assert answer == "echo: count" and len(p.requests) == 3, answer
    sessions = c.list_sessions()["sessions"]
    assert [x["id"] for x in sessions] == [s["id"]] == [named], (sessions, named)
    kept = [(m["role"], m["content"]) for m in c.messages(s["id"])["messages"]]
    assert kept == [("user", "a note of mine"), ("user", "count"), ("assistant", "echo: count")], kept


@pytest.mark.parametrize("then", ["end", "pause"])
def test_an_sdk_s_retry_after_the_kept_session_was_ended_makes_a_session(asked_paused, then):
    """The session a failed request made is kept (another app wrote to it), then ended or paused (by that app or
    the user) before the SDK's retry: the retry, which names no session, went on in it all the same and was refused
    as that session's ended or paused one, though the app never named it: its question lost. A kept session no longer
    writable is no retry's: the retry makes a session, as its first try did."""
    d, p, flag = asked_paused
    c = d.client()
    p.faults.status, p.faults.times = 502, 1
    q = [{"role": "user", "content": "count"}]
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        call = pool.submit(openai_app(d, None).chat.completions.create, model="echo-1", messages=q)
        arrived(flag)
        [s] = c.list_sessions()["sessions"]
        c.append(s["id"], "user", "a note of mine")
        os.remove(flag)
        with pytest.raises(openai.APIError):
            call.result(timeout=30)
        getattr(c, then)(s["id"])
        retry = pool.submit(
            openai_app(d, None).chat.completions.with_raw_response.create,
            model="echo-1",
            messages=q,
            extra_headers={"x-stainless-retry-count": "1"},  # (the SDK's own retry's, as it sends it)
        )
        arrived(flag)
        os.remove(flag)
        raw = retry.result(timeout=30)
    assert raw.parse().choices[0].message.content == "echo: count"
    named = raw.headers.get("X-Sessiond-Session")
    assert named != s["id"], named
    assert [m["content"] for m in c.messages(s["id"])["messages"]] == ["a note of mine", "count"]
    assert [m["content"] for m in c.messages(named)["messages"]] == ["count", "echo: count"]
