"""POST complete with an empty question (`"content": ""`, or only whitespace) was taken: recorded as the user's
message and sent, costing an answer to nothing, where `sessiond ask` refuses it. The API refuses it now as the
CLI does: 422 invalid naming `content` and the ways on (the question; or no content, for the model to answer
the chat as it stands); nothing recorded, nothing sent."""

from __future__ import annotations

import pytest

from sessiond.client import ApiError


@pytest.mark.parametrize("stream", [False, True])
def test_an_empty_question_is_refused_nothing_recorded_nothing_sent(echo_daemon, stream):
    d, p = echo_daemon
    c = d.client()
    sid = c.create_session(model="echo-1")["id"]
    c.append(sid, "user", "hello")
    before = c.messages(sid)["messages"]
    for empty in ("", "  \n\t", "\u3000"):
        with pytest.raises(ApiError) as exc:
            if stream:
                "".join(c.complete_stream(sid, empty))
            else:
                c.complete(sid, empty)
        err = exc.value
        assert err.status == 422 and err.code == "invalid", err
        assert "content" in err.message and "leave content out" in err.message, err.message
    assert c.messages(sid)["messages"] == before and p.requests == []
    # the ways on: a question, or none (the model answers the chat as it stands)
    assert c.complete(sid)["content"] and c.complete(sid, "a question")["content"] == "echo: a question"


def test_the_cli_refuses_it_as_before(echo_daemon):
    from conftest import run_cli

    d, p = echo_daemon
    sid = d.client().create_session(model="echo-1")["id"]
    res = run_cli(d.home, "ask", sid, "  ")
    assert res.returncode != 0 and "the question is empty" in res.stderr and p.requests == [], res.stderr
