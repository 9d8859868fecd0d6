"""A chat's context budget bounds what is sent to its model: the system prompt and the session's initial
messages go with every question, so they count against the budget as the chat's messages do (was: only
the chat's messages counted, and a chat "within" its budget sent the model the prompt and the initial
messages on top of it, past the window the budget was set to)."""

from __future__ import annotations

import math

import pytest

from conftest import run_cli, started_with, started_with_provider
from servers.openai_server import Provider, serve_threaded
from sessiond.client import ApiError


@pytest.fixture
def model():
    provider, server = serve_threaded(Provider())
    yield provider, f"http://127.0.0.1:{server.port}/v1"
    server.stop()


def sent_tokens(request: dict) -> int:
    """What a request to the model holds, counted as the daemon's default estimator counts (chars / 4)."""
    return sum(max(1, math.ceil(len(m["content"]) / 4)) for m in request["messages"])


def test_the_system_prompt_and_initial_messages_count_against_the_budget(make_daemon, model):
    provider, url = model
    d = started_with_provider(make_daemon, url)
    c = d.client()
    budget = 200  # x 0.8: 160 tokens sent at most
    sid = c.create_session(
        model="echo-1",
        system_prompt="s" * 160,  # 40 tokens
        initial_messages=[{"role": "user", "content": "i" * 80}, {"role": "assistant", "content": "a" * 80}],  # 40
        max_context_tokens=budget,
    )["id"]
    ctx = c.context(sid)
    assert ctx["fixed_tokens"] == 80 and ctx["active_tokens"] == 0, ctx
    for i in range(9):
        c.append(sid, "user", f"{i:02d}" + "m" * 58)  # 15 tokens each
        ctx = c.context(sid)
        assert ctx["fixed_tokens"] + ctx["active_tokens"] <= budget * 0.8, ctx
    assert c.context(sid)["compacted_messages"] > 0
    c.complete(sid, "q" * 60)  # 15 tokens
    sent = provider.requests[-1]
    assert sent["messages"][0] == {"role": "system", "content": "s" * 160}, sent
    assert sent_tokens(sent) <= budget * 0.8, (sent_tokens(sent), c.context(sid))
    # the CLI says what the fixed part is
    out = run_cli(d.home, "context", sid, check=True).stdout
    assert "80 of the system prompt and initial messages" in out, out


def test_a_message_that_cannot_fit_beside_the_system_prompt_is_refused(make_daemon, model):
    _, url = model
    d = started_with_provider(make_daemon, url)
    c = d.client()
    sid = c.create_session(system_prompt="s" * 240, max_context_tokens=100)["id"]  # 60 of the 80 allowed
    with pytest.raises(ApiError) as e:
        c.append(sid, "user", "x", tokens=30)
    said = e.value.message
    assert e.value.code == "context_overflow" and "system prompt" in said and "60" in said, said
    assert c.messages(sid)["messages"] == []  # nothing written
    c.append(sid, "user", "x", tokens=20)  # what fits beside it goes in


def test_manual_compaction_to_the_budget_counts_the_fixed_part(make_daemon, model):
    _, url = model
    d = started_with_provider(make_daemon, url)
    c = d.client()
    sid = c.create_session(system_prompt="s" * 80, max_context_tokens=100, auto_compact=False)["id"]  # 20 fixed
    for _ in range(6):
        c.append(sid, "user", "m", tokens=10)
    ctx = c.compact(sid)  # down to half of the 60 the system prompt's 20 leave of the 80
    assert ctx["fixed_tokens"] == 20 and ctx["active_tokens"] == 30, ctx


def test_an_automatic_compaction_is_announced_as_a_compact_is(daemon):
    """An append that compacts its chat first changes the chat's active context as `compact` does: the event
    stream says so (chat.compacted, before the append's messages.appended), so that an app showing the active
    context follows it (was: only `compact` and a fork announced it; an automatic compaction went unsaid)."""
    c = daemon.client()
    sid = c.create_session(max_context_tokens=100)["id"]  # compacts past 80
    stream = c.event_stream()
    it = iter(stream)
    try:
        for _ in range(6):
            c.append(sid, "user", "m", tokens=15)
        assert c.context(sid)["compacted_messages"] > 0
        last = c.append(sid, "user", "end", tokens=1)["id"]
        seen = []
        for ev in it:
            if ev.get("session") == sid:
                seen.append(ev)
                if last in ev.get("ids", ()):
                    break
    finally:
        stream.close()
    kinds = [e["type"] for e in seen]
    assert "chat.compacted" in kinds, kinds
    at = kinds.index("chat.compacted")
    assert seen[at]["chat"] == "main" and kinds[at + 1] == "messages.appended", kinds


def test_the_system_prompt_is_counted_with_the_daemons_estimator(make_daemon):
    """config.toml's token_estimator counts the system prompt too, as it counts messages."""
    d = started_with(make_daemon, token_estimator="words")
    c = d.client()
    sid = c.create_session(system_prompt="one two three four five six", max_context_tokens=100)["id"]
    assert c.context(sid)["fixed_tokens"] == 8  # 6 words x 4/3 (chars / 4 would be 7)


def test_the_context_line_counts_one_token_and_one_message_in_the_singular():
    """`sessiond context` said "1 tokens in 1 active messages" for a chat of one short message."""
    from sessiond.cli.commands.manage import _context_line

    one = {"chat": "main", "active_tokens": 1, "active_messages": 1, "policy": {}, "compacted_upto": None}
    assert _context_line(one) == "chat main: 1 token in 1 active message", _context_line(one)
    two = {**one, "active_tokens": 2, "active_messages": 0}
    assert _context_line(two) == "chat main: 2 tokens in 0 active messages", _context_line(two)
