"""An app whose history parts from its chat's (an answer regenerated, a question edited) had the part past
the divergence appended; its next call, matched from the chat's start again, parted at the same place, and
all of it was appended once more, and again at every call after: the chat grew by the whole conversation
since the divergence at each call (quadratically), and every device it syncs to with it. What an earlier
call appended past the divergence, which the chat now ends with, is not appended again: only what follows
it. What the app replaced stays in the chat, where it was said."""

from __future__ import annotations

import pytest

from conftest import openai_app, started_with_provider
from servers.openai_server import Provider, serve_threaded


@pytest.fixture
def daemon(make_daemon):
    p, server = serve_threaded(Provider())
    yield started_with_provider(make_daemon, f"http://127.0.0.1:{server.port}/v1", openai_listen="127.0.0.1:0")
    server.stop()


def _stored(c, sid: str) -> list[tuple[str, str]]:
    return [(m["role"], m["content"]) for m in c.messages(sid, limit=1000)["messages"]]


def _turns(app, history: list, first: int, last: int) -> None:
    for i in range(first, last + 1):
        history.append({"role": "user", "content": f"q{i}"})
        answer = app.chat.completions.create(model="echo-1", messages=history).choices[0].message.content
        history.append({"role": "assistant", "content": answer})


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_a_regenerated_answer(daemon, stream):
    c = daemon.client()
    sid = c.create_session(model="echo-1")["id"]
    app = openai_app(daemon, sid)
    history = [{"role": "user", "content": "q1"}]
    app.chat.completions.create(model="echo-1", messages=history)
    # the app drops that answer and asks again (its Regenerate); it keeps the second, which it shows edited
    app.chat.completions.create(model="echo-1", messages=history)
    history.append({"role": "assistant", "content": "echo: q1, edited"})
    for i in (2, 3, 4):
        history.append({"role": "user", "content": f"q{i}"})
        reply = app.chat.completions.create(model="echo-1", messages=history, stream=stream)
        if stream:
            answer = "".join(ch.choices[0].delta.content or "" for ch in reply if ch.choices)
        else:
            answer = reply.choices[0].message.content
        history.append({"role": "assistant", "content": answer})
    assert (
        _stored(c, sid)
        == [
            ("user", "q1"),
            ("assistant", "echo: q1"),
            ("assistant", "echo: q1"),  # the two answers the model gave, where it gave them
            ("assistant", "echo: q1, edited"),  # the app's copy, as it sent it: once
            *[(m["role"], m["content"]) for m in history[2:]],
        ]
    )


def test_an_edited_question(daemon):
    c = daemon.client()
    sid = c.create_session(model="echo-1")["id"]
    app = openai_app(daemon, sid)
    history: list = []
    _turns(app, history, 1, 2)
    old = list(history)
    history[2:] = []  # the app edits its second question: the conversation goes on from the new one
    _turns(app, history, 5, 7)
    assert _stored(c, sid) == [(m["role"], m["content"]) for m in old + history[2:]]
    # a call that resends the history as it is adds the answer only
    app.chat.completions.create(model="echo-1", messages=history)
    assert len(_stored(c, sid)) == len(old) + len(history) - 2 + 1
