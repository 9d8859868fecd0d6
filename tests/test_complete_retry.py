"""A question to a model sent again with its Idempotency-Key while the first try is still waiting for the
model (an app that timed out, or two of its workers holding one request): the model is asked once, the
answer stored once, and every try gets that one answer, not a refusal naming a key the app never sent."""

from __future__ import annotations

import threading

import pytest

from conftest import started_with_provider, wait_for
from servers.openai_server import Provider, serve_threaded
from sessiond.client import ApiError


@pytest.fixture
def slow_model(make_daemon):
    """A daemon whose provider takes a second to answer; (daemon, provider)."""
    p, server = serve_threaded(Provider())
    p.faults.hang = 1.0  # the fault itself: a model that takes a while, so the retry comes while it thinks
    d = started_with_provider(make_daemon, f"http://127.0.0.1:{server.port}/v1", default_provider="loop")
    yield d, p
    server.stop()


@pytest.mark.parametrize("streamed", [False, True])
def test_a_retry_while_the_model_thinks_gets_the_one_answer(slow_model, streamed):
    d, p = slow_model
    c = d.client()
    sid = c.create_session(model="echo-1")["id"]
    results: dict[str, object] = {}

    def first() -> None:
        try:
            results["first"] = d.client().complete(sid, "hello", idempotency_key="K")
        except ApiError as e:
            results["first"] = e

    t = threading.Thread(target=first)
    t.start()
    try:
        # the question is stored and the model is being asked: now the retry comes
        wait_for(lambda: len(c.messages(sid)["messages"]) == 1, what="the first try's question stored")
        retry = d.client()
        try:
            if streamed:
                s = retry.complete_stream(sid, "hello", idempotency_key="K")
                assert "".join(s) == "echo: hello"
                again = s.message
            else:
                again = retry.complete(sid, "hello", idempotency_key="K")
        except ApiError as e:  # was: 422 idempotency_key_reused, naming 'K:answer'
            pytest.fail(f"the retry was refused: {e.status} {e.code}: {e.message}")
    finally:
        t.join(30)
    one = results["first"]
    assert isinstance(one, dict), one
    assert again is not None and again["id"] == one["id"] and again["content"] == "echo: hello"
    assert [(m["role"], m["content"]) for m in c.messages(sid)["messages"]] == [
        ("user", "hello"),
        ("assistant", "echo: hello"),
    ]
    assert len(p.requests) == 1  # the model was asked once (was: twice, the second answer's tokens lost)


def test_the_same_key_with_another_question_is_refused_naming_the_key_sent(slow_model):
    d, p = slow_model
    p.faults.hang = 0
    c = d.client()
    sid = c.create_session(model="echo-1")["id"]
    c.complete(sid, "hello", idempotency_key="K")
    with pytest.raises(ApiError) as e:
        c.complete(sid, "another question", idempotency_key="K")
    assert (e.value.status, e.value.code) == (422, "idempotency_key_reused")
    # the key the app sent, not the daemon's own records of its question and answer (K:question, K:answer)
    assert "'K'" in e.value.message and "K:" not in e.value.message, e.value.message
    assert len(p.requests) == 1 and len(c.messages(sid)["messages"]) == 2
