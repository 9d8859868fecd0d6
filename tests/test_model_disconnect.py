"""An app that goes away before a model's answer reaches it, by either route that talks to a model (POST
/v1/sessions/{id}/complete and the OpenAI-compatible endpoint), whole or streamed: the generation is
stopped and the session keeps what reached the app, as `sessiond ask`'s Ctrl-C does. An answer the app
never got is not recorded (was: a whole answer was waited for and recorded, one the app never saw, which
the app's next call then did not match; a stream left before its first chunk was not stopped)."""

from __future__ import annotations

import os

import pytest

from conftest import openai_app, raw_post, started_with_provider, wait_for
from servers.openai_server import Provider, serve_threaded


@pytest.fixture
def thinking(make_daemon):
    """A daemon whose provider thinks two seconds before it answers; (daemon, provider)."""
    p, server = serve_threaded(Provider())
    p.faults.hang = 2.0  # the fault itself: a model that takes a while, so the app can leave meanwhile
    d = started_with_provider(make_daemon, f"http://127.0.0.1:{server.port}/v1")
    yield d, p
    server.stop()


def ask_and_leave(d, p: Provider, sid: str, path: str, body: dict, extra: str = "") -> None:
    """The request sent on the daemon's socket; the connection closed, unanswered, once its question is
    stored and has reached the provider (closed sooner, on a loaded machine, the daemon rightly asks no model:
    there is then no generation to see stopped)."""
    s = raw_post(d.socket, path, body, extra)
    wait_for(lambda: d.client().messages(sid)["messages"], what="the question stored")
    wait_for(lambda: p.arrived, what="the question at the provider")
    s.close()


@pytest.mark.parametrize("route", ["complete", "openai"])
@pytest.mark.parametrize("stream", [False, True])
def test_an_app_gone_before_the_answer_stops_the_generation_and_records_no_answer(thinking, route, stream):
    d, p = thinking
    c = d.client()
    sid = c.create_session(model="echo-1")["id"]
    if route == "complete":
        ask_and_leave(d, p, sid, f"/v1/sessions/{sid}/complete", {"content": "hello", "stream": stream})
    else:
        body = {"model": "echo-1", "messages": [{"role": "user", "content": "hello"}], "stream": stream}
        ask_and_leave(d, p, sid, "/openai/v1/chat/completions", body, f"X-Sessiond-Session: {sid}\r\n")
    wait_for(lambda: p.left_unanswered + p.completed + p.streams_stopped, timeout=20, what="the provider done")
    gone = p.left_unanswered
    # the next question is answered, and the session holds only what its app got
    p.faults.hang = 0
    assert c.complete(sid, "again")["content"] == "echo: again"
    assert [(m["role"], m["content"]) for m in c.messages(sid)["messages"]] == [
        ("user", "hello"),
        ("user", "again"),
        ("assistant", "echo: again"),
    ]
    assert gone == 1, "the provider's generation was not stopped"
    logs = "".join(open(os.path.join(d.home, "logs", f)).read() for f in os.listdir(os.path.join(d.home, "logs")))
    assert "the app went away before the answer" in logs and "Traceback" not in logs


@pytest.mark.parametrize("route", ["openai", "complete"])
def test_an_app_that_stops_a_stream_and_asks_again_at_once_keeps_its_history_in_order(make_daemon, route):
    """A chat app's Stop, then the next question sent at once (by the OpenAI endpoint with the part of the
    answer it showed in its history): the part the daemon records (interrupted) is the answer to the first
    question, stored once and before the next question. Was: the next request was matched and appended
    before the daemon noticed the first app had gone (it looks every 0.1 s), so the OpenAI app's copy of the
    part was stored as a new message and the daemon's own copy landed after the next question: the part
    twice, the history out of order."""
    p, server = serve_threaded(Provider())
    try:
        d = started_with_provider(
            make_daemon, f"http://127.0.0.1:{server.port}/v1", openai_listen="127.0.0.1:0", default_provider="loop"
        )
        c = d.client()
        sid = c.create_session(model="echo-1")["id"]
        app = openai_app(d, sid)
        had: list[dict] = []
        for turn in range(3):  # the race is the daemon's to lose each time: a few tries
            p.faults.delay = 0.5  # the fault itself: a slow model, so the app stops it between two words
            question = {"role": "user", "content": f"q{turn} one two three four five six"}
            got = ""
            if route == "openai":
                with app.chat.completions.create(model="echo-1", messages=had + [question], stream=True) as chunks:
                    for chunk in chunks:
                        got += (chunk.choices[0].delta.content or "") if chunk.choices else ""
                        if " " in got:
                            break  # Stop: the connection closed, the answer left half-read
            else:
                with c.complete_stream(sid, question["content"]) as texts:
                    for text in texts:
                        got += text
                        if " " in got:
                            break
            p.faults.delay = 0
            nxt = {"role": "user", "content": f"next{turn}"}
            if route == "openai":
                sent = had + [question, {"role": "assistant", "content": got}, nxt]
                answer = app.chat.completions.create(model="echo-1", messages=sent).choices[0].message.content
            else:
                answer = c.complete(sid, nxt["content"])["content"]
            stored = c.messages(sid, limit=1000)["messages"]
            new = stored[len(had) :]
            assert [(m["role"], m.get("interrupted")) for m in new] == [
                ("user", None),
                ("assistant", True),
                ("user", None),
                ("assistant", None),
            ], (turn, got, [(m["role"], m.get("interrupted"), m["content"]) for m in new])
            assert new[1]["content"].startswith(got) and (new[2]["content"], new[3]["content"]) == (
                nxt["content"],
                answer,
            ), new
            had = [{"role": m["role"], "content": m["content"]} for m in stored]
    finally:
        server.stop()


def test_an_app_s_shorter_copy_of_a_stopped_answer_matches_what_was_recorded():
    """The daemon records every word of a stopped answer it sent; under load an app may have read fewer
    before its Stop, and sends back that shorter copy as its history. It was taken for a new message and
    stored after the recorded part (the answer twice; h-shake2 saw it 1 run in 12 under load)."""
    from sessiond.daemon.openai_history import new_part

    history = [
        {"role": "user", "content": "q1"},
        {"role": "assistant", "content": "echo: q1 one", "interrupted": True},
    ]
    sent = [
        {"role": "user", "content": "q1"},
        {"role": "assistant", "content": "echo: q1"},
        {"role": "user", "content": "next1"},
    ]
    assert new_part({}, {}, history, sent) == [{"role": "user", "content": "next1"}]
    # an answer recorded whole is matched whole: a shorter copy of it is the app's own, new message
    whole = [history[0], {"role": "assistant", "content": "echo: q1 one"}]
    assert new_part({}, {}, whole, sent) == sent[1:]
    # nor is a copy that is not a prefix of the stopped answer
    other = [sent[0], {"role": "assistant", "content": "echo: q2"}, sent[2]]
    assert new_part({}, {}, history, other) == other[1:]


async def test_the_stored_history_says_which_answer_was_stopped(tmp_path):
    """The matching above needs the stored history to say that an answer was stopped: the history read for
    it (`chat_history`) gave role, content and tool calls only, so a stopped answer never matched the app's
    shorter copy, which was stored again after it (the OpenAI route's Stop test failed 1 run in ~5 under
    load, whenever the daemon had sent a word more than the app read)."""
    from sessiond.daemon.openai_history import new_part
    from sessiond.storage.database import Database

    db = await Database.open(os.path.join(tmp_path, "db.sqlite"))
    try:
        sid = (await db.sessions.create({"name": "s"}))["id"]
        chat = (await db.get_session(sid))["current_chat"]
        await db.append_messages(sid, [{"role": "user", "content": "q1"}])
        await db.append_messages(sid, [{"role": "assistant", "content": "echo: q1 one", "interrupted": True}])
        await db.append_messages(sid, [{"role": "user", "content": "q2"}, {"role": "assistant", "content": "a2"}])
        history = await db.chat_history(sid, chat)
        assert [m.get("interrupted") for m in history] == [None, True, None, None], history
        sent = [{"role": "user", "content": "q1"}, {"role": "assistant", "content": "echo: q1"}]
        assert new_part({}, {}, history[:2], [*sent, {"role": "user", "content": "next"}]) == [
            {"role": "user", "content": "next"}
        ]
    finally:
        await db.close()
