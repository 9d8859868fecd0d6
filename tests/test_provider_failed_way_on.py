"""A provider's failure before any answer leaves the question recorded (README, "Talk to a model"): the CLI's
`ask` says so and names `ask ID --again`, but an app on the socket API got the provider's words alone ("retry
later", "retry after 7 s"), and the request sent again as it was records the question a second time (the
Python client makes a new Idempotency-Key per call). The refusal names the recorded question
(`details.question`) and the way to have it answered in API terms (`details.api`: the request again without
its content), as the API's other refusals name theirs; following it asks the model without a second copy."""

from __future__ import annotations

import pytest

from conftest import started_with_provider
from servers.openai_server import Faults, Provider, serve_threaded
from sessiond.client import ApiError


@pytest.fixture
def failing(make_daemon):
    p, server = serve_threaded(Provider(faults=Faults(status=500, times=1)))
    d = started_with_provider(make_daemon, f"http://127.0.0.1:{server.port}/v1", default_provider="loop")
    yield d
    server.stop()


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_a_failure_before_the_answer_names_the_question_and_the_way_on(failing, stream):
    c = failing.client()
    sid = c.create_session(model="echo-1")["id"]
    side = c.create_chat(sid, name="side")["id"]
    with pytest.raises(ApiError) as exc:
        if stream:
            list(c.complete_stream(sid, "what is BLAKE3?", chat="side", model="echo-2"))
        else:
            c.complete(sid, "what is BLAKE3?", chat="side", model="echo-2")
    err = exc.value
    assert err.code == "provider_failed", err
    (question,) = c.messages(sid, chat=side)["messages"]
    assert question["content"] == "what is BLAKE3?"
    assert err.details["question"] == question["id"], err.details
    assert err.details["api"] == [f'POST /v1/sessions/{sid}/complete {{"chat": "{side}", "model": "echo-2"}}'], err
    # the way on, followed: the model answers the question recorded, and it is not recorded again
    answer = c.complete(sid, chat=side, model="echo-2")
    assert answer["content"] == "echo: what is BLAKE3?"
    assert [m["role"] for m in c.messages(sid, chat=side)["messages"]] == ["user", "assistant"]


def test_a_failure_of_a_request_with_no_question_names_none(failing):
    c = failing.client()
    sid = c.create_session(model="echo-1")["id"]
    c.append(sid, "user", "already here")
    with pytest.raises(ApiError) as exc:
        c.complete(sid)
    assert exc.value.code == "provider_failed"
    assert "question" not in exc.value.details and "api" not in exc.value.details, exc.value.details


def test_a_stream_cut_before_its_first_word_names_the_question_and_the_way_on(make_daemon):
    # was: the provider's stream began (its chunk of no text), then broke: the question recorded, nothing of the
    # answer, and the error event named neither the question nor the way on, as a failure before its head does
    p, server = serve_threaded(Provider(faults=Faults(cut_after=0)))
    try:
        d = started_with_provider(make_daemon, f"http://127.0.0.1:{server.port}/v1", default_provider="loop")
        c = d.client()
        sid = c.create_session(model="echo-1")["id"]
        with pytest.raises(ApiError) as exc:
            list(c.complete_stream(sid, "what is BLAKE3?"))
        err = exc.value
        assert err.code == "provider_stream_cut", err
        ((question, role),) = [(m["id"], m["role"]) for m in c.messages(sid)["messages"]]
        assert role == "user" and err.details["question"] == question, err.details
        main = c.get_session(sid)["current_chat"]
        assert err.details["api"] == [f'POST /v1/sessions/{sid}/complete {{"chat": "{main}"}}'], err.details
    finally:
        server.stop()
