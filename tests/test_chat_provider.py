"""A chat's own provider (its settings' `provider`, which the API takes as it takes a chat's own model and
sampling settings) is the one its questions go to (was: stored, listed, and ignored: the chat's questions
went to the session's provider, another server than the one the user chose for that chat, e.g. a hosted
API for a chat meant to stay on a local model)."""

from __future__ import annotations

import os

import pytest

from conftest import openai_app, started_with_provider
from servers.openai_server import Provider, serve_threaded


@pytest.fixture
def two(make_daemon):
    """A daemon with providers 'loop' (the default) and 'other', each its own server."""
    (p1, s1), (p2, s2) = serve_threaded(Provider()), serve_threaded(Provider())
    d = started_with_provider(
        make_daemon, f"http://127.0.0.1:{s1.port}/v1", start=False, default_provider="loop", openai_listen="127.0.0.1:0"
    )
    with open(os.path.join(d.home, "config.toml"), "a") as f:
        f.write(f'[providers.other]\nbase_url = "http://127.0.0.1:{s2.port}/v1"\n')
    yield d.start(), p1, p2
    s1.stop()
    s2.stop()


def test_a_chats_own_provider_answers_its_questions(two):
    d, loop, other = two
    c = d.client()
    sid = c.create_session(model="echo-1")["id"]
    c.create_chat(sid, name="private", settings={"provider": "other"})
    answer = c.complete(sid, "in the private chat", chat="private")
    assert answer["provider"] == "other", answer
    assert len(other.requests) == 1 and loop.requests == [], (len(other.requests), len(loop.requests))
    assert c.complete(sid, "in main")["provider"] == "loop"  # the session's own chat: the default
    assert len(loop.requests) == 1
    # the question's own provider still wins over the chat's
    assert c.complete(sid, "once", chat="private", provider="loop")["provider"] == "loop"
    # the OpenAI endpoint asks the provider of the session's current chat
    c.switch_chat(sid, "private")
    openai_app(d, sid).chat.completions.create(model="echo-1", messages=[{"role": "user", "content": "app"}])
    assert len(other.requests) == 2, len(other.requests)
