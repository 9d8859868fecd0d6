"""A question sent again with its Idempotency-Key after its first try recorded it and got no answer (the provider
failed, the daemon's stop cut it: "a retry stores nothing twice and asks the model again only if no answer was
recorded") needs room in its chat for the answer alone: the question is there already. The retry was judged as a
new question and its answer, two messages, so in a chat one message short of max_messages_per_chat it was refused
(429 limit_reached, "the question and the model's answer") though its answer fits, and asking it again with
`--again` was the only way on. So with the token quota: the question the first try recorded and charged is not
the retry's to find room for."""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

from conftest import DaemonProc, started_with_provider
from sessiond.client import ApiError


@pytest.fixture(scope="module")
def loop_daemon():
    """(daemon, provider): the module's one daemon (max_messages_per_chat 4), its provider the loopback one."""
    from servers.openai_server import Provider, serve_threaded

    tmp = tempfile.mkdtemp(prefix="sd-retry-")
    p, server = serve_threaded(Provider())
    d = DaemonProc(os.path.join(tmp, "home"))
    try:
        yield (
            started_with_provider(
                lambda: d, f"http://127.0.0.1:{server.port}/v1", default_provider="loop", max_messages_per_chat=4
            ),
            p,
        )
    finally:
        d.stop()
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def test_a_retry_of_a_recorded_question_needs_room_for_its_answer_alone(loop_daemon):
    d, p = loop_daemon
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


def test_a_retry_of_a_question_that_brought_the_quota_to_its_end_is_answered(loop_daemon):
    """The first try's question, recorded and charged, brought the session's use to its quota exactly, and the
    provider failed: the retry was refused (429 quota_exceeded, "so nothing is sent to the model") though the first
    try had room and had the model asked, so the question could not be answered but by raising the quota. A retry
    of a try whose answer was recorded gets that answer, the quota spent or not."""
    d, p = loop_daemon
    c = d.client()
    sid = c.create_session(model="echo-1")["id"]
    first = c.complete(sid, "one", idempotency_key="k-one")
    used = c.quota(sid)["tokens_used"]
    c.update_session(sid, policy={"token_quota": used + 1})  # room for the question "two" (one token) alone
    p.faults.status, p.faults.times = 401, 1
    with pytest.raises(ApiError) as e:
        c.complete(sid, "two", idempotency_key="k-two")
    assert e.value.details.get("question"), e.value.details
    assert c.quota(sid)["level"] == "exhausted"  # the question charged: its use at its quota exactly
    answer = c.complete(sid, "two", idempotency_key="k-two")  # the same request again: answered, as it had room
    assert answer["content"] == "echo: two"
    assert [m["content"] for m in c.messages(sid)["messages"]][2:] == ["two", "echo: two"]
    assert c.complete(sid, "one", idempotency_key="k-one")["id"] == first["id"]  # answered from its record
    with pytest.raises(ApiError) as e:  # and a new question, the quota spent, is refused still
        c.complete(sid, "three", idempotency_key="k-three")
    assert e.value.code == "quota_exceeded", e.value


def test_a_retry_after_the_current_chat_switched_answers_its_own_chat(loop_daemon):
    """A keyed question naming no chat goes to the session's current chat; its first try recorded it there and got
    no answer, and another app switched the session to another chat before the retry (the same request, the CLI's
    own retry of a broken connection, `ask` again). The retry was judged in the chat current then: refused 409
    idempotency_key_reused, "already used for another question" (its record names the first try's chat), though it
    was the same question; or, that chat full, refused for the room of a question and its answer. It is the first
    try's question: answered in the chat that holds it."""
    d, p = loop_daemon
    c = d.client()
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
