"""A request for several answers (OpenAI's `n`) through the OpenAI-compatible endpoint: the provider's usage
counts the completion tokens of every answer (what it bills), while the session records one answer, the
first. The recorded answer's `tokens` was that total, so the chat's context budget counted the answers it
does not hold (compacting early, refusing a question that fit). Now the answer's `tokens` counts the answer
recorded (the daemon's estimate, the provider giving no count per answer), and the session's quota still
counts every answer's tokens, as billed (its `usage.completion_tokens`, kept)."""

from __future__ import annotations

import pytest

from conftest import openai_app


@pytest.mark.parametrize("stream", [False, True])
def test_n_answers_count_one_in_the_context_and_all_in_the_quota(served_openai, stream):
    d, _ = served_openai
    c = d.client()
    sid = c.create_session(model="echo-1", token_quota=100_000)["id"]
    q = [{"role": "user", "content": "one two three four five six seven eight"}]
    extra = {"stream_options": {"include_usage": True}} if stream else {}
    out = openai_app(d, sid).chat.completions.create(model="echo-1", messages=q, n=3, stream=stream, **extra)
    if stream:
        list(out)
    [u, a] = c.messages(sid)["messages"]
    assert a["content"] == "echo: " + q[0]["content"], a
    billed = a["usage"]["completion_tokens"]
    assert billed == 9 * 3, a["usage"]  # every answer's tokens, as the provider billed them: kept
    single = c.context(sid)
    # the context holds the question and the one answer recorded: its tokens that answer's, not the three's
    assert a["tokens"] < billed // 2, a
    assert single["active_tokens"] == u["tokens"] + a["tokens"], single
    # the quota: what was billed, the prompt and every answer
    used = c.quota(sid)["tokens_used"]
    assert used == u["tokens"] + a["usage"]["prompt_tokens"] + billed, (used, u, a)


def test_one_answer_counts_the_providers_tokens_in_both(served_openai):
    d, _ = served_openai
    c = d.client()
    sid = c.create_session(model="echo-1", token_quota=100_000)["id"]
    q = [{"role": "user", "content": "one two three"}]
    openai_app(d, sid).chat.completions.create(model="echo-1", messages=q)
    [u, a] = c.messages(sid)["messages"]
    assert a["tokens"] == a["usage"]["completion_tokens"] == 4, a  # the provider's count, as before
    assert c.context(sid)["active_tokens"] == u["tokens"] + 4
    assert c.quota(sid)["tokens_used"] == u["tokens"] + a["usage"]["prompt_tokens"] + 4


def test_the_quotas_recount_charges_as_an_append_does():
    """A pull or an import recounts the quota in SQL (CHARGE_SUM_SQL): the same as charge() of each message."""
    import json
    import sqlite3

    from sessiond.storage.model import CHARGE_SUM_SQL, charge

    rows = [
        {"tokens": 5, "usage": {"prompt_tokens": 10, "completion_tokens": 27}},  # n answers: 27 billed
        {"tokens": 5, "usage": {"prompt_tokens": 10, "completion_tokens": 5}},
        {"tokens": 9, "usage": {"completion_tokens": 4}},  # fewer: its own tokens
        {"tokens": 3, "usage": {"completion_tokens": "40", "prompt_tokens": True}},  # not counts: none
        {"tokens": None, "usage": {"completion_tokens": 7}},
        {"tokens": 2},
    ]
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE messages (tokens INTEGER, extra TEXT)")
    for r in rows:
        extra = json.dumps({"usage": r["usage"]}) if "usage" in r else None
        db.execute("INSERT INTO messages VALUES (?, ?)", (r["tokens"], extra))
    [(total,)] = db.execute(f"SELECT {CHARGE_SUM_SQL} FROM messages").fetchall()
    assert total == sum(map(charge, rows)) == 37 + 15 + 9 + 3 + 7 + 2
