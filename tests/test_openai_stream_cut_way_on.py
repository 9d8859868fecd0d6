"""The OpenAI-compatible endpoint's stream cut by the provider mid-answer (some chunks passed on, then no
[DONE]) ended with an error event saying only that the provider cut the answer off: the app, told nothing of
what the session kept nor of what to do, could not know that the part it was given is recorded (marked
interrupted) nor that sending the same request again records its question once and the model's new answer
after the kept part (compare `/v1/sessions/ID/complete`'s provider_stream_cut). The event's error, which the
official `openai` client raises as APIError, now names the kept message and the retry, in its message and
in fields of its own (`message_id`, `retry`); the retry, followed, records a whole answer after it."""

from __future__ import annotations

import openai
import pytest

from conftest import openai_app


def _assistant(c, sid: str) -> list[dict]:
    return [m for m in c.messages(sid)["messages"] if m["role"] == "assistant"]


def test_a_cut_stream_names_the_kept_part_and_the_retry(served_openai):
    d, p = served_openai
    c = d.client()
    sid = c.create_session(model="echo-1")["id"]
    app = openai_app(d, sid)
    history = [{"role": "user", "content": "one two three four five"}]
    p.faults.cut_after = 3
    got: list[str] = []
    with pytest.raises(openai.APIError) as exc:
        for ch in app.chat.completions.create(model="echo-1", messages=history, stream=True):
            if ch.choices:
                got.append(ch.choices[0].delta.content or "")
    p.faults.cut_after = None
    assert got and "".join(got), got  # some of the answer was passed on before the cut
    [part] = _assistant(c, sid)
    assert part["interrupted"] is True and part["content"] == "".join(got), part
    err = exc.value
    assert err.code == "provider_stream_cut", err.body
    assert part["id"] in err.message and "send the same request again" in err.message, err.message
    assert err.body["message_id"] == part["id"] and err.body["retry"] == "the same request", err.body
    # the retry, followed: the question is not recorded twice, a whole answer follows the kept part
    again = app.chat.completions.create(model="echo-1", messages=history, stream=True)
    assert "".join(ch.choices[0].delta.content or "" for ch in again if ch.choices)
    msgs = c.messages(sid)["messages"]
    assert [(m["role"], m.get("interrupted", False)) for m in msgs] == [
        ("user", False),
        ("assistant", True),
        ("assistant", False),
    ], msgs


def test_a_stream_cut_before_its_first_word_names_the_retry(served_openai):
    """Cut after the role chunk alone: nothing of the answer is kept, the question is; the same request again
    does not record it twice, and answers it."""
    d, p = served_openai
    c = d.client()
    sid = c.create_session(model="echo-1")["id"]
    app = openai_app(d, sid)
    history = [{"role": "user", "content": "one two three"}]
    p.faults.cut_after = 0  # the role chunk, then the cut
    with pytest.raises(openai.APIError) as exc:
        list(app.chat.completions.create(model="echo-1", messages=history, stream=True))
    p.faults.cut_after = None
    err = exc.value
    assert err.code == "provider_stream_cut" and not _assistant(c, sid), err.body
    assert "send the same request again" in err.message and "message_id" not in err.body, err.message
    assert err.body["retry"] == "the same request", err.body
    app.chat.completions.create(model="echo-1", messages=history)
    assert [m["role"] for m in c.messages(sid)["messages"]] == ["user", "assistant"]


def test_a_cut_stream_of_a_new_session_names_it_for_the_retry(served_openai):
    """A request without X-Sessiond-Session makes a new session, whose id comes back in a header the SDKs do not
    show: the same request again would make another, its question recorded twice over two sessions. The error
    names the session made, in words and in `session`, and the retry with its header."""
    d, p = served_openai
    history = [{"role": "user", "content": "one two three four five"}]
    p.faults.cut_after = 3
    with pytest.raises(openai.APIError) as exc:
        list(openai_app(d, None).chat.completions.create(model="echo-1", messages=history, stream=True))
    p.faults.cut_after = None
    err = exc.value
    sid = err.body["session"]
    assert f"X-Sessiond-Session: {sid}" in err.message and err.body["retry"].endswith(sid), err.body
    app = openai_app(d, sid)
    assert app.chat.completions.create(model="echo-1", messages=history).choices[0].message.content
    c = d.client()
    assert [(m["role"], m.get("interrupted", False)) for m in c.messages(sid)["messages"]] == [
        ("user", False),
        ("assistant", True),
        ("assistant", False),
    ]
    assert len(c.list_sessions()["sessions"]) == 1  # no second session made


def test_a_stream_cut_before_its_first_word_in_a_new_session_keeps_no_session(served_openai):
    """Was: the session the request made was kept with the question alone, while a failure before the stream
    (a 429, a 5xx) deletes it. The app's retry is the same request, which the SDKs send without the session's
    header (they show neither it nor the error's own fields): each such retry made another session, the one
    before left holding a lone question. With nothing of the answer to keep, the session is deleted as on a
    failure before any answer, and the error says to send the same request again: one session, its question
    once."""
    d, p = served_openai
    history = [{"role": "user", "content": "one two three"}]
    p.faults.cut_after = 0  # the role chunk, then the cut
    with pytest.raises(openai.APIError) as exc:
        list(openai_app(d, None).chat.completions.create(model="echo-1", messages=history, stream=True))
    p.faults.cut_after = None
    err = exc.value
    assert err.code == "provider_stream_cut" and "session" not in err.body, err.body
    assert err.body["retry"] == "the same request" and "X-Sessiond-Session" not in err.message, err.body
    c = d.client()
    assert c.list_sessions()["sessions"] == []
    openai_app(d, None).chat.completions.create(model="echo-1", messages=history)  # the retry
    [s] = c.list_sessions()["sessions"]
    assert [m["role"] for m in c.messages(s["id"])["messages"]] == ["user", "assistant"]
