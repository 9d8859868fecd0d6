"""The daemon stopped (`sessiond stop`, SIGTERM) while an app streamed an answer through the OpenAI-compatible
endpoint: the stop closed the app's connection in the middle of the stream, so an app on the official `openai`
SDK saw only `APIConnectionError: Connection error.`, though the session kept what had arrived (marked
interrupted). Before the stream ends, the app is now sent the error event OpenAI's streams carry mid-stream
(which the SDK raises as APIError), coded `stopping`, naming what was kept and the way on; the stop stays
within its deadline."""

from __future__ import annotations

import threading
import time

import openai
import pytest

from conftest import openai_app, run_cli

SCRIPT = [({"content": "one "}, None), ({"content": "two "}, None), ({"content": "three"}, "stop")]


def test_a_stop_mid_stream_tells_the_openai_app_what_was_kept(served_openai):
    d, p = served_openai
    sid = d.client().create_session(model="echo-1")["id"]
    p.faults.script, p.faults.script_wait = SCRIPT, 2  # "one ", "two ", then the model pauses
    got: list[str] = []
    took = None
    try:
        with pytest.raises(openai.APIError) as exc:
            for ch in openai_app(d, sid).chat.completions.create(
                model="echo-1", messages=[{"role": "user", "content": "count"}], stream=True
            ):
                got += [ch.choices[0].delta.content or ""] if ch.choices else []
                if "".join(got) == "one two " and took is None:  # the model paused mid-answer: the stop now
                    t0 = time.monotonic()
                    res = run_cli(d.home, "stop")
                    took = time.monotonic() - t0
                    assert res.returncode == 0 and "killed" not in res.stdout + res.stderr, res
    finally:
        p.resume.set()
    assert took is not None and took < 12, took  # within the stop's deadline, not killed
    assert d.proc is not None and d.proc.wait(10) == 0  # a clean stop
    err = exc.value
    assert not isinstance(err, openai.APIConnectionError), err
    assert err.code == "stopping" and err.type == "api_error", err.body
    assert "the daemon is stopping" in err.message, err.message
    d.start()
    [q, a] = d.client().messages(sid)["messages"]
    assert a["interrupted"] is True and a["content"] == "one two ", a
    assert err.body["message_id"] == a["id"] and a["id"] in err.message, err.body
    assert err.body["kept_chars"] == len("one two ") and "8 characters" in err.message, err.message
    assert err.body["retry"] == "the same request", err.body


def _stopped_while_the_model_thinks(
    d, p, sid: str | None, stream: bool, meanwhile=None, question: str = "count"
) -> Exception:
    """An app's question ("count") to session `sid` (None: none named), the daemon stopped while its model thinks
    (held), after `meanwhile()` if given: the app's error."""
    p.faults.held = True
    q = [{"role": "user", "content": question}]
    out: list = []

    def ask() -> None:
        try:
            res = openai_app(d, sid).chat.completions.create(model="echo-1", messages=q, stream=stream)
            list(res) if stream else None
        except Exception as exc:
            out.append(exc)

    app = threading.Thread(target=ask)
    app.start()
    try:
        deadline = time.monotonic() + 10
        while not p.requests and time.monotonic() < deadline:  # the model asked: it thinks, held
            time.sleep(0.02)
        assert p.requests
        if meanwhile is not None:
            meanwhile()
        t0 = time.monotonic()
        res = run_cli(d.home, "stop")
        assert res.returncode == 0 and "killed" not in res.stdout + res.stderr, res
        assert time.monotonic() - t0 < 12
        app.join(20)
    finally:
        p.resume.set()
    [err] = out
    return err


@pytest.mark.parametrize("stream", [False, True])
def test_a_stop_before_the_answer_tells_the_openai_app_so(served_openai, stream):
    """The model still thinking (a whole answer waited for, a stream before its first chunk): the stop closed
    the connection, an APIConnectionError (which the SDK retries, against a daemon gone). The app is answered
    503 `stopping`, not retried (x-should-retry: false), naming the retry once the daemon runs again; the
    question stays, recorded once."""
    d, p = served_openai
    sid = d.client().create_session(model="echo-1")["id"]
    err = _stopped_while_the_model_thinks(d, p, sid, stream)
    assert isinstance(err, openai.APIStatusError) and err.status_code == 503, err
    assert err.code == "stopping" and "the daemon is stopping" in err.message, err.body
    assert err.response.headers.get("x-should-retry") == "false" and err.body["retry"] == "the same request"
    assert "nothing of the answer was recorded" in err.message, err.message
    d.start()
    assert [m["role"] for m in d.client().messages(sid)["messages"]] == ["user"]


@pytest.mark.parametrize("stream", [False, True])
def test_a_stop_before_the_answer_keeps_no_session_the_request_made(served_openai, stream):
    """A request naming no session (X-Sessiond-Session) makes one. The stop before the model's answer kept that
    session, holding the question alone, and named it for the retry; but the app's retry is the same request, as an
    SDK sends it (with no header: its own retry of a connection the stop closed, or the app's), which made a second
    session, the first left holding the question alone. Nothing of the answer kept, the session made is deleted, as
    on a provider's failure before the answer: the same request again makes one session, its question once."""
    d, p = served_openai
    q = [{"role": "user", "content": "count"}]
    err = _stopped_while_the_model_thinks(d, p, None, stream)
    assert isinstance(err, openai.APIStatusError) and err.status_code == 503 and err.code == "stopping", err
    assert "session" not in err.body and err.body["retry"] == "the same request", err.body
    assert "X-Sessiond-Session" not in err.message and "no session was kept" in err.message, err.message
    d.start()
    c = d.client()
    assert c.list_sessions()["sessions"] == [], "the session the request made, holding its question alone, kept"
    p.faults.held = False
    openai_app(d, None).chat.completions.create(model="echo-1", messages=q)  # the same request, once it runs
    [s] = c.list_sessions()["sessions"]
    assert [m["role"] for m in c.messages(s["id"])["messages"]] == ["user", "assistant"]


@pytest.mark.parametrize("stream", [False, True])
def test_a_stop_keeps_the_session_a_request_made_once_another_wrote_to_it(served_openai, stream):
    """The session a request made is another app's too once it knows its id (`sessiond ls`, the stream's header):
    a note appended to it while the model thought was deleted with it at the stop, which also told the app that no
    session was kept. Written to since the request's question, it is kept, and named for the retry."""
    d, p = served_openai
    c = d.client()

    def note() -> None:
        c.append(_made(c), "user", "a note of mine")

    err = _stopped_while_the_model_thinks(d, p, None, stream, note)
    assert isinstance(err, openai.APIStatusError) and err.status_code == 503 and err.code == "stopping", err
    d.start()
    [s] = c.list_sessions()["sessions"]
    assert [m["content"] for m in c.messages(s["id"])["messages"]] == ["count", "a note of mine"]
    assert s["id"] in err.message and "no session was kept" not in err.message, err.message


def _made(c) -> str:
    """The session an app's request made, once its question is recorded (while the model thinks)."""
    deadline = time.monotonic() + 10
    while not (made := c.list_sessions()["sessions"]) or not c.messages(made[0]["id"])["messages"]:
        assert time.monotonic() < deadline, "the request's question never recorded"
        time.sleep(0.02)
    return made[0]["id"]


def test_a_stop_deletes_the_session_a_request_made_past_a_checkpoint_mark(served_openai):
    """A question long enough to pass the session's checkpoint interval has the daemon checkpoint the session
    after it: that checkpoint is no write of another app, and the session the request made is deleted all the same."""
    d, p = served_openai
    c = d.client()

    def checkpointed() -> None:
        sid, deadline = _made(c), time.monotonic() + 10
        while not c.checkpoints(sid)["checkpoints"]:
            assert time.monotonic() < deadline, "no checkpoint made"
            time.sleep(0.02)

    err = _stopped_while_the_model_thinks(d, p, None, False, checkpointed, question="word " * 2000)
    assert isinstance(err, openai.APIStatusError) and "no session was kept" in err.message, err
    d.start()
    assert c.list_sessions()["sessions"] == []
