"""A question sent again with its Idempotency-Key after its first try recorded it and got no answer (the provider
failed, the daemon's stop cut it: "a retry stores nothing twice and asks the model again only if no answer was
recorded") needs room in its chat for the answer alone: the question is there already. The retry was judged as a
new question and its answer, two messages, so in a chat one message short of max_messages_per_chat it was refused
(429 limit_reached, "the question and the model's answer") though its answer fits, and asking it again with
`--again` was the only way on."""

from __future__ import annotations

import pytest

from conftest import started_with_provider
from sessiond.client import ApiError


def test_a_retry_of_a_recorded_question_needs_room_for_its_answer_alone(make_daemon):
    from servers.openai_server import Provider, serve_threaded

    p, server = serve_threaded(Provider())
    try:
        d = started_with_provider(
            make_daemon, f"http://127.0.0.1:{server.port}/v1", default_provider="loop", max_messages_per_chat=4
        )
        c = d.client()
        sid = c.create_session(model="echo-1")["id"]
        c.complete(sid, "one")
        p.faults.status, p.faults.times = 401, 1  # the provider refuses the next question: it stays, unanswered
        with pytest.raises(ApiError) as e:
            c.complete(sid, "two", idempotency_key="k-two")
        assert e.value.details.get("question"), e.value.details
        assert len(c.messages(sid)["messages"]) == 3  # the question recorded: room for its answer, the 4th
        answer = c.complete(sid, "two", idempotency_key="k-two")  # the same request again
        kept = [(m["role"], m["content"]) for m in c.messages(sid)["messages"]]
        assert kept[2:] == [("user", "two"), ("assistant", answer["content"])], kept
        assert len(kept) == 4
        # and a new question, with no room for it and its answer, is refused still
        with pytest.raises(ApiError) as e:
            c.complete(sid, "three")
        assert e.value.code == "limit_reached", e.value
        _a_retry_after_the_current_chat_switched_answers_its_own_chat(c, p)
    finally:
        server.stop()


def _a_retry_after_the_current_chat_switched_answers_its_own_chat(c, p) -> None:
    """A keyed question naming no chat goes to the session's current chat; its first try recorded it there and got
    no answer, and another app switched the session to another chat before the retry (the same request, the CLI's
    own retry of a broken connection, `ask` again). The retry was judged in the chat current then: refused 409
    idempotency_key_reused, "already used for another question" (its record names the first try's chat), though it
    was the same question; or, that chat full, refused for the room of a question and its answer. It is the first
    try's question: answered in the chat that holds it."""
    sid = c.create_session(model="echo-1")["id"]
    p.faults.status, p.faults.times = 500, 1  # the first try's model fails: its question stays, unanswered
    with pytest.raises(ApiError):
        c.complete(sid, "one", idempotency_key="k-one")
    c.create_chat(sid, id="other")
    c.switch_chat(sid, "other")  # another app's switch, before the retry
    answer = c.complete(sid, "one", idempotency_key="k-one")  # the same request again
    assert answer["chat"] == "main" and answer["content"] == "echo: one", answer
    kept = [(m["role"], m["content"]) for m in c.messages(sid, chat="main")["messages"]]
    assert kept == [("user", "one"), ("assistant", "echo: one")], kept
    assert c.messages(sid, chat="other")["messages"] == []
