"""A reasoning model's answer (OpenAI's o-series, gpt-5; other providers' thinking models through their OpenAI
APIs) is billed for tokens it does not show: its usage's completion_tokens counts its hidden reasoning too
(completion_tokens_details.reasoning_tokens). The answer's recorded `tokens`, which the chat's context budget counts
as what the context holds, were that whole count: a two-word answer after a long think counted thousands, so a chat
with a budget compacted early, or refused a question that fitted. Now its `tokens` are the answer's own (the count
less the reasoning), as a request for several answers (`n`) has its recorded answer's own, and the session's quota
still counts every token billed (`usage.completion_tokens`, kept)."""

from __future__ import annotations

import pytest

from conftest import openai_app

REASONING = 500


@pytest.mark.parametrize("way", ["complete", "complete_stream", "openai", "openai_stream"])
def test_a_reasoning_answer_counts_its_own_tokens_in_the_context_and_all_in_the_quota(served_openai, way):
    d, p = served_openai
    p.faults.reasoning = REASONING
    c = d.client()
    sid = c.create_session(model="echo-1", token_quota=100_000)["id"]
    question = "one two three"
    if way == "complete":
        c.complete(sid, question)
    elif way == "complete_stream":
        with c.complete_stream(sid, question) as s:
            list(s)
    else:
        stream = way == "openai_stream"
        extra = {"stream_options": {"include_usage": True}} if stream else {}
        out = openai_app(d, sid).chat.completions.create(
            model="echo-1", messages=[{"role": "user", "content": question}], stream=stream, **extra
        )
        if stream:
            list(out)
    [u, a] = c.messages(sid)["messages"]
    assert a["content"] == "echo: one two three", a
    billed = a["usage"]["completion_tokens"]
    assert billed == 4 + REASONING, a["usage"]  # what the provider billed: kept
    assert a["tokens"] == 4, a  # the answer's own: what the context holds
    assert c.context(sid)["active_tokens"] == u["tokens"] + 4
    assert c.quota(sid)["tokens_used"] == u["tokens"] + a["usage"]["prompt_tokens"] + billed


def test_reasoning_counted_beside_the_completion_is_not_taken_from_it():
    """A provider that counts the reasoning beside completion_tokens (its total_tokens adds the three, as xAI's
    does) has an answer's completion_tokens its own already: nothing is taken from them."""
    from sessiond.daemon.providers import reasoning_of

    def usage(completion: int, total: int | None, reasoning) -> dict:
        u = {
            "prompt_tokens": 10,
            "completion_tokens": completion,
            "completion_tokens_details": {"reasoning_tokens": reasoning},
        }
        return {"usage": u if total is None else {**u, "total_tokens": total}}

    assert reasoning_of(usage(504, 514, 500)) == 500  # within it (OpenAI's: total = prompt + completion)
    assert reasoning_of(usage(504, None, 500)) == 500  # no total: as OpenAI counts
    assert reasoning_of(usage(4, 514, 500)) is None  # beside it (total = prompt + completion + reasoning)
    assert reasoning_of(usage(4, None, 500)) is None  # more than the completion: not within it
    assert reasoning_of(usage(504, 514, "500")) is None and reasoning_of(usage(504, 514, 0)) is None
    assert reasoning_of({"usage": None}) is None and reasoning_of({}) is None
