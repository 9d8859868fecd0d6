"""A streamed request for several answers (OpenAI's `n`) gets each chunk naming its choice's index, the
answers' chunks interleaved. The daemon took each chunk's first choice as the answer's, whatever its index:
the answer it recorded was every answer's words interleaved ("echo: ECHO: q Q"), one no model gave. It
records the first answer (index 0), as for a whole answer; the app is passed every chunk as it came. An app that
goes on from another of the answers has it recorded as the next message, charged nothing more: the provider billed
it with the request that asked for it."""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

from conftest import DaemonProc, openai_app, started_with_provider
from servers.openai_server import Provider, serve_threaded


@pytest.fixture(scope="module")
def n_daemon():
    """(daemon, provider): the module's one daemon, its OpenAI endpoint on a loopback port."""
    tmp = tempfile.mkdtemp(prefix="sd-n-")
    p, server = serve_threaded(Provider())
    d = DaemonProc(os.path.join(tmp, "home"))
    try:
        yield started_with_provider(lambda: d, f"http://127.0.0.1:{server.port}/v1", openai_listen="127.0.0.1:0"), p
    finally:
        d.stop()
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def test_a_stream_of_two_answers_records_the_first(n_daemon):
    d, _ = n_daemon
    c = d.client()
    sid = c.create_session(model="echo-1")["id"]
    q = [{"role": "user", "content": "two ways"}]
    got: dict[int, str] = {}
    for ch in openai_app(d, sid).chat.completions.create(model="echo-1", messages=q, stream=True, n=2):
        for choice in ch.choices:
            got[choice.index] = got.get(choice.index, "") + (choice.delta.content or "")
    assert got == {0: "echo: two ways", 1: "ECHO: TWO WAYS"}  # the app's: both, as they came
    stored = [(m["role"], m["content"]) for m in c.messages(sid)["messages"]]
    assert stored == [("user", "two ways"), ("assistant", "echo: two ways")]
    # and whole: the first choice, as before
    whole = openai_app(d, sid).chat.completions.create(model="echo-1", messages=q, n=2)
    assert whole.choices[0].message.content == "echo: two ways"


@pytest.mark.parametrize("stream", [False, True])
def test_an_app_going_on_from_another_answer_is_charged_it_once(n_daemon, stream):
    """The app's history then holds the answer it chose (index 1), where the chat holds the first: it parts from
    the chat there, and that answer is recorded after the first (the parted-history rule), charged its tokens as
    a message appended is, though the provider billed them already, as completion tokens of the request for two
    answers (the first answer's `usage`, which the quota counts whole): the quota counted them twice."""
    d, _ = n_daemon
    c = d.client()
    sid = c.create_session(model="echo-1")["id"]
    app = openai_app(d, sid)
    q = [{"role": "user", "content": "two ways"}]
    if stream:
        chosen = "".join(
            ch.choices[0].delta.content or ""
            for ch in app.chat.completions.create(model="echo-1", messages=q, stream=True, n=2)
            if ch.choices and ch.choices[0].index == 1
        )
    else:
        chosen = app.chat.completions.create(model="echo-1", messages=q, n=2).choices[1].message.content
    assert chosen == "ECHO: TWO WAYS"
    [question, first] = c.messages(sid)["messages"]
    billed = first["usage"]["prompt_tokens"] + first["usage"]["completion_tokens"]  # both answers'
    assert c.quota(sid)["tokens_used"] == question["tokens"] + billed
    history = [*q, {"role": "assistant", "content": chosen}, {"role": "user", "content": "and so?"}]
    app.chat.completions.create(model="echo-1", messages=history)
    msgs = c.messages(sid)["messages"]
    assert [(m["role"], m["content"]) for m in msgs] == [
        ("user", "two ways"),
        ("assistant", "echo: two ways"),
        ("assistant", "ECHO: TWO WAYS"),
        ("user", "and so?"),
        ("assistant", "echo: and so?"),
    ]
    answer = msgs[4]
    then = answer["usage"]["prompt_tokens"] + answer["tokens"]
    assert c.quota(sid)["tokens_used"] == question["tokens"] + billed + msgs[3]["tokens"] + then


def test_a_going_on_refused_before_it_is_recorded_leaves_the_answer_unbilled(n_daemon):
    """A request going on from another answer that is refused before its messages are recorded (the quota has no
    room for its question, a context budget) records nothing; the app's retry, once the user made room, records
    that answer as billed. The daemon forgot it was billed at the refused request: the retry charged it again."""
    import openai

    d, _ = n_daemon
    c = d.client()
    sid = c.create_session(model="echo-1")["id"]
    app = openai_app(d, sid)
    q = [{"role": "user", "content": "two ways"}]
    chosen = app.chat.completions.create(model="echo-1", messages=q, n=2).choices[1].message.content
    c.update_session(sid, token_quota=c.quota(sid)["tokens_used"] + 5)  # no room for a long question
    history = [*q, {"role": "assistant", "content": chosen}, {"role": "user", "content": "and so? " * 40}]
    with pytest.raises(openai.RateLimitError):
        app.chat.completions.create(model="echo-1", messages=history)
    assert len(c.messages(sid)["messages"]) == 2  # nothing recorded
    c.update_session(sid, token_quota=1_000_000)
    app.chat.completions.create(model="echo-1", messages=history)
    msgs = c.messages(sid)["messages"]
    assert (msgs[2]["role"], msgs[2]["content"], msgs[2]["tokens"]) == ("assistant", chosen, 0)


def test_an_answer_gone_on_from_counts_in_the_context(n_daemon):
    """The answer the app went on from (index 1) is recorded with `tokens` 0, what the quota counts (billed with
    the request that asked for it), but it is in the chat's context all the same: the context budget counted it
    as 0 tokens, so compaction came late and the provider could refuse the request for its length. It is counted
    there by its `context_tokens` (the daemon's estimate): in the chat's active tokens, and in the budget's
    check, which compacts the chat before the going on's messages as it would for any other message as long."""
    d, _ = n_daemon
    c = d.client()
    words = " ".join(f"w{i}" for i in range(150))  # ~ 160 tokens a text
    sid = c.create_session(model="echo-1", max_context_tokens=500)["id"]
    app = openai_app(d, sid)
    q = [{"role": "user", "content": words}]
    chosen = app.chat.completions.create(model="echo-1", messages=q, n=2).choices[1].message.content
    assert chosen == "ECHO: " + words.upper()
    [question, first] = c.messages(sid)["messages"]
    assert c.context(sid)["compacted_upto"] is None  # ~ 320 of the 400 the budget leaves
    history = [*q, {"role": "assistant", "content": chosen}, {"role": "user", "content": "and so?"}]
    app.chat.completions.create(model="echo-1", messages=history)
    msgs = c.messages(sid)["messages"]
    went_on = msgs[2]
    assert (went_on["content"], went_on["tokens"]) == (chosen, 0)  # the quota: charged once, as billed
    assert went_on["context_tokens"] == first["tokens"] > 100, went_on  # the context: as long as the first
    ctx = c.context(sid)
    counted = sum(m.get("context_tokens", m["tokens"]) for m in msgs if m["lamport"] > msgs[1]["lamport"])
    # over the 400: compacted before the going on's messages, the question and the first answer set aside
    assert ctx["compacted_upto"] == first["id"], ctx
    assert ctx["active_tokens"] == counted, (ctx, msgs)


def test_an_app_going_on_after_a_restart_is_charged_it_once(n_daemon):
    """The answers an app may go on from were remembered in the daemon's memory only: after a restart (an update, a
    reboot) the app going on from the second answer was charged it again, though the provider had billed it with
    the request for two. They are kept in the database, with the session."""
    d, _ = n_daemon
    c = d.client()
    sid = c.create_session(model="echo-1")["id"]
    q = [{"role": "user", "content": "two ways"}]
    chosen = openai_app(d, sid).chat.completions.create(model="echo-1", messages=q, n=2).choices[1].message.content
    used = c.quota(sid)["tokens_used"]
    d.restart()
    c = d.client()
    history = [*q, {"role": "assistant", "content": chosen}, {"role": "user", "content": "and so?"}]
    openai_app(d, sid).chat.completions.create(model="echo-1", messages=history)
    msgs = c.messages(sid)["messages"]
    assert (msgs[2]["role"], msgs[2]["content"], msgs[2]["tokens"]) == ("assistant", chosen, 0), msgs[2]
    answer = msgs[4]
    assert c.quota(sid)["tokens_used"] == used + msgs[3]["tokens"] + answer["usage"]["prompt_tokens"] + answer["tokens"]
