"""A checkpoint's `tokens` and a session's `tokens_used` are two counts, as the README says: a proof's is
the sum of the token counts of the messages it covers (what anyone holding them recomputes when checking
it), while the session's, which its quota, its statistics and its checkpoint interval count, adds a model's
answers' prompt tokens (the context sent with each question). (The README said nothing of it: a checkpoint
after an answer looked short of the session's count.)"""

from __future__ import annotations

import pytest

from conftest import started_with_provider, wait_for
from servers.openai_server import Provider, serve_threaded


@pytest.fixture
def daemon(make_daemon):
    p, server = serve_threaded(Provider())
    yield started_with_provider(make_daemon, f"http://127.0.0.1:{server.port}/v1")
    server.stop()


def test_a_proof_counts_message_tokens_and_the_session_prompt_tokens_too(daemon):
    c = daemon.client()
    sid = c.create_session(model="echo-1", checkpoint_interval=1_000_000)["id"]
    answer = c.complete(sid, "one two three")
    prompt = answer["usage"]["prompt_tokens"]
    assert prompt > 0
    messages = c.messages(sid)["messages"]
    held = sum(m["tokens"] for m in messages)
    proof = c.checkpoint(sid)
    assert proof["tokens"] == held
    used = c.get_session(sid)["tokens_used"]
    assert used == held + prompt
    assert c.quota(sid)["tokens_used"] == used
    assert c.stats(session=sid)["tokens"] == used


def test_the_checkpoint_interval_counts_prompt_tokens_too(daemon):
    c = daemon.client()
    sid = c.create_session(model="echo-1")["id"]
    c.append(sid, "user", "short", tokens=1)
    answer = c.complete(sid, "again")
    interval = c.get_session(sid)["tokens_used"] + 1  # one more token than it holds, its prompt tokens counted
    assert interval > sum(m["tokens"] for m in c.messages(sid)["messages"]) + 1  # (the messages alone: far off)
    c.update_session(sid, checkpoint_interval=interval)
    before = len(c.checkpoints(sid)["checkpoints"])
    c.append(sid, "user", "past it", tokens=2)
    wait_for(lambda: len(c.checkpoints(sid)["checkpoints"]) == before + 1, timeout=30, what="the interval's checkpoint")
    assert answer["usage"]["prompt_tokens"] > 0
