"""A reasoning model's answer (OpenAI's o-series, gpt-5; other providers' thinking models through their OpenAI
APIs) is billed for tokens it does not show: its usage's completion_tokens counts its hidden reasoning too
(completion_tokens_details.reasoning_tokens). The answer's recorded `tokens`, which the chat's context budget counts
as what the context holds, were that whole count: a two-word answer after a long think counted thousands, so a chat
with a budget compacted early, or refused a question that fitted. Now its `tokens` are the answer's own (the count
less the reasoning), as a request for several answers (`n`) has its recorded answer's own, and the session's quota
still counts every token billed (`usage.completion_tokens`, kept)."""

from __future__ import annotations

from conftest import openai_app, run_cli

REASONING = 500


WAYS = ("complete", "complete_stream", "ask", "openai", "openai_stream")


def _asked(d, sid: str, way: str, question: str):
    """`question` asked in session `sid` of daemon `d` one `way`: the usage the OpenAI endpoint gave its app."""
    c = d.client()
    if way == "complete":
        c.complete(sid, question)
    elif way == "complete_stream":
        with c.complete_stream(sid, question) as s:
            list(s)
    elif way == "ask":
        run_cli(d.home, "ask", sid, question, check=True)
    else:
        stream = way == "openai_stream"
        extra = {"stream_options": {"include_usage": True}} if stream else {}
        out = openai_app(d, sid).chat.completions.create(
            model="echo-1", messages=[{"role": "user", "content": question}], stream=stream, **extra
        )
        return next(x.usage for x in list(out) if x.usage) if stream else out.usage
    return None


def test_a_reasoning_answer_counts_its_own_tokens_in_the_context_and_all_in_the_quota(served_openai):
    d, p = served_openai
    p.faults.reasoning = REASONING
    c = d.client()
    for way in WAYS:
        sid = c.create_session(model="echo-1", token_quota=100_000)["id"]
        _asked(d, sid, way, "one two three")
        [u, a] = c.messages(sid)["messages"]
        assert a["content"] == "echo: one two three", (way, a)
        billed = a["usage"]["completion_tokens"]
        assert billed == 4 + REASONING, (way, a["usage"])  # what the provider billed: kept
        assert a["tokens"] == 4, (way, a)  # the answer's own: what the context holds
        assert c.context(sid)["active_tokens"] == u["tokens"] + 4, way
        assert c.quota(sid)["tokens_used"] == u["tokens"] + a["usage"]["prompt_tokens"] + billed, way


def test_reasoning_counted_beside_the_completion_is_added_to_it_as_openai_counts():
    """A provider that counts the reasoning beside completion_tokens (its total_tokens adds the three, as xAI's
    does) has its usage taken as OpenAI counts it, the reasoning within completion_tokens: the answer's own
    tokens are the same, and what was billed is charged. OpenAI's (and a usage saying no reasoning, as Ollama's)
    is taken as it is."""
    from sessiond.daemon.providers import MAX_TOKENS, reasoning_of, usage_of

    def usage(completion, total: int | None, reasoning) -> dict:
        u = {
            "prompt_tokens": 10,
            "completion_tokens": completion,
            "completion_tokens_details": {"reasoning_tokens": reasoning},
        }
        return {"usage": u if total is None else {**u, "total_tokens": total}}

    def taken(data: dict) -> tuple:
        return (usage_of(data) or {}).get("completion_tokens"), reasoning_of(data)

    assert taken(usage(504, 514, 500)) == (504, 500)  # within it (OpenAI's: total = prompt + completion)
    assert taken(usage(504, None, 500)) == (504, 500)  # no total: as OpenAI counts
    assert taken(usage(4, 514, 500)) == (504, 500)  # beside it (total = prompt + completion + reasoning): added
    assert taken(usage(4, 600, 500)) == (504, 500)  # (a total counting more still: beside)
    assert taken(usage(4, None, 500)) == (4, None)  # more than the completion, no total to say beside: not taken
    assert taken(usage(4, 14, 500)) == (4, None)  # nor with a total that does not count it
    assert taken(usage(504, 514, "500")) == (504, None) and taken(usage(4, 514, 0)) == (4, None)
    assert taken(usage("4", 514, 500)) == (None, None)  # (no completion count to add it to)
    big = MAX_TOKENS - 10
    assert taken(usage(big, big + 10 + 500, 500)) == (big, 500)  # the sum past what a count holds: read as OpenAI's
    assert taken({"usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}}) == (2, None)  # Ollama's
    assert reasoning_of({"usage": None}) is None and reasoning_of({}) is None


def test_reasoning_counted_beside_the_completion_is_charged_as_openai_counts_it(served_openai):
    """xAI's usage counts a reasoning model's hidden tokens beside completion_tokens (its total_tokens adds the
    three), where OpenAI's counts them within. They were billed and never charged: the quota counted the answer's
    own tokens alone. The answer's usage is now recorded as OpenAI counts it (completion_tokens with the reasoning
    within), so that every device's count of the quota (storage/model.py charge, CHARGE_SUM_SQL, the same on every
    version) charges them, and its `tokens` are still its own: what the context holds. The app gets the provider's
    usage as it came."""
    from sessiond.storage.model import charge

    d, p = served_openai
    p.faults.reasoning, p.faults.reasoning_beside = REASONING, True
    c = d.client()
    for way in WAYS:
        sid = c.create_session(model="echo-1", token_quota=100_000)["id"]
        usage = _asked(d, sid, way, "one two three")
        if usage is not None:  # the provider's, as it came
            assert (usage.completion_tokens, usage.total_tokens) == (4, usage.prompt_tokens + 4 + REASONING), way
        [u, a] = c.messages(sid)["messages"]
        assert a["content"] == "echo: one two three", (way, a)
        assert a["usage"]["completion_tokens"] == 4 + REASONING, (way, a["usage"])  # as OpenAI counts them
        assert a["tokens"] == 4, (way, a)  # the answer's own: what the context holds
        assert c.context(sid)["active_tokens"] == u["tokens"] + 4, way
        charged = u["tokens"] + a["usage"]["prompt_tokens"] + 4 + REASONING
        assert c.quota(sid)["tokens_used"] == charged == charge(u) + charge(a), way
