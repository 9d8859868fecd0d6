"""A call the OpenAI-compatible endpoint refuses for what its new messages would do to the session asks the
model nothing. The endpoint sends the app's request to the provider before it records the request's new
messages (the provider thinks while they commit), and recording them is where the quota's room and the chat's
context budget were judged: a question that did not fit (a quota at 90 of 100 and a question of 20 tokens;
a chat at its budget with automatic compaction off; a question larger than the budget itself) reached the
provider, which began answering (the prompt billed) before the app got its 429 or 400 and nothing was kept.
They are judged before the request leaves now, as the session's other refusals are. (Each test asks one
question first: the daemon's connection to the provider is then open, and a request leaves at once.)"""

from __future__ import annotations

import openai
import pytest

from conftest import openai_app
from servers.openai_server import Provider


def _call(app: openai.OpenAI, messages: list, stream: bool) -> str:
    if not stream:
        return app.chat.completions.create(model="echo-1", messages=messages).choices[0].message.content or ""
    out = app.chat.completions.create(model="echo-1", messages=messages, stream=True)
    return "".join((ch.choices[0].delta.content or "") for ch in out if ch.choices)


def _asked(p: Provider) -> list[str]:
    """The last user's message of each request the provider got."""
    return [next(m["content"] for m in reversed(r["messages"]) if m["role"] == "user") for r in p.requests]


def _first(d, sid: str, stream: bool) -> tuple[openai.OpenAI, list]:
    """The app, and its history after a first question answered (the daemon's connection to the provider open,
    as in any conversation past its first question)."""
    app = openai_app(d, sid)
    history = [{"role": "user", "content": "hello"}]
    return app, history + [{"role": "assistant", "content": _call(app, history, stream)}]


@pytest.mark.parametrize("stream", [False, True])
def test_a_question_past_the_quota_s_room_is_refused_unasked(served_openai, stream):
    d, p = served_openai
    c = d.client()
    sid = c.create_session(model="echo-1")["id"]
    app, history = _first(d, sid, stream)
    used = c.quota(sid)["tokens_used"]
    c.update_session(sid, token_quota=used + 10)  # 10 tokens left: the quota is not spent
    big = [*history, {"role": "user", "content": "word " * 40}]
    with pytest.raises(openai.RateLimitError) as exc:
        _call(app, big, stream)
    assert exc.value.code == "quota_exceeded", exc.value.body
    assert exc.value.response.headers.get("x-should-retry") == "false"
    c.update_session(sid, token_quota=10_000)  # then a question that fits: the provider's first request
    assert _call(app, big, stream).startswith("echo: word")
    assert _asked(p) == ["hello", "word " * 40], "the refused question reached the provider"
    assert [m["tokens"] for m in c.messages(sid)["messages"]][2] == 50


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("auto_compact", [False, True])
def test_a_question_past_the_context_budget_is_refused_unasked(served_openai, stream, auto_compact):
    """Compaction off: the chat is full. On: the question alone is more than the budget."""
    d, p = served_openai
    c = d.client()
    sid = c.create_session(model="echo-1", auto_compact=auto_compact)["id"]
    app, history = _first(d, sid, stream)
    c.append(sid, "user", "first " * 10, tokens=60)
    c.update_session(sid, max_context_tokens=100)
    big = [*history, {"role": "user", "content": "first " * 10}, {"role": "user", "content": "word " * 120}]
    with pytest.raises(openai.BadRequestError) as exc:
        _call(app, big, stream)
    assert exc.value.code == "context_length_exceeded" and exc.value.param == "messages", exc.value.body
    assert len(c.messages(sid)["messages"]) == 3, "something of the refused request was recorded"
    c.update_session(sid, max_context_tokens=10_000)
    assert _call(app, big, stream).startswith("echo: word")
    assert _asked(p) == ["hello", "word " * 120], "the refused question reached the provider"
