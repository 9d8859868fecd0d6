"""A question to a model (POST .../complete with no new question: nothing is written before the answer) that
comes while a session's delete is under way is answered as the delete ends: the session gone, 404, and the
model not asked. Was: a delete's rows are committed a turn of the loop after its transaction (the group
commit), and a `complete` that came in between read the session still there, asked the model (the user's
tokens spent) and then failed to record the answer, the session gone. `rm` and the clean-up alike (the
expiry's clean-up deletes through the same path), the OpenAI endpoint too; and an `end` the same way (an
ended session records no answer)."""

from __future__ import annotations

import os

import openai
import pytest

from asking import complete_raw, in_thread, logged
from conftest import openai_app, started_with_provider, wait_for
from servers.openai_server import Provider, serve_threaded
from sessiond.client import ApiError


@pytest.fixture
def held(make_daemon, tmp_path):
    """held(POINT, **settings): a daemon whose commits held at POINT (`commit.delete`, `commit.end`) wait
    while FLAG is there (their transactions done, their rows not committed), and a model: (daemon, provider,
    FLAG)."""
    p, server = serve_threaded(Provider())

    def make(point: str, **settings):
        flag = str(tmp_path / point)
        pause = {"SESSIOND_TEST_PAUSE": f"{point}:{flag}"}
        url = f"http://127.0.0.1:{server.port}/v1"
        return started_with_provider(lambda: make_daemon(env=pause), url, **settings), p, flag

    yield make
    server.stop()


def _raced(held, close, ask) -> tuple[list, list]:
    """`close()` (a delete, an end) held at its commit, `ask()` sent meanwhile, then the commit let go: what
    each answered (or raised)."""
    d, p, flag = held
    closed: list = []
    closing = in_thread(close, closed)
    wait_for(lambda: os.path.exists(flag), timeout=20, what="the commit held")
    answered: list = []
    asking = in_thread(ask, answered)
    # the model asked (the bug), or the question waiting for the outcome (or already answered)
    wait_for(lambda: p.requests or logged(d, "complete.waits_closing") or answered, timeout=20, what="the question")
    os.remove(flag)  # the delete or end commits
    closing.join(timeout=30)
    asking.join(timeout=30)
    assert closed and not isinstance(closed[0], (ApiError, openai.APIStatusError)), closed
    assert answered, "no answer to the question"
    assert not p.requests, f"the model was asked for a session being closed, its answer lost: {answered}"
    return closed[0], answered[0]


def _session(d, *history: str) -> str:
    c = d.client()
    sid = c.create_session(model="echo-1")["id"]
    for role, text in zip(("user", "assistant") * len(history), history, strict=False):
        c.append(sid, role, text)
    return sid


@pytest.mark.parametrize("how,key", [("rm", None), ("cleanup", None), ("rm", "k-1")])
def test_a_question_during_a_delete_asks_no_model(held, how, key):
    d, p, flag = held("commit.delete")
    sid = _session(d, "a b c")
    c = d.client()
    deleted, answered = _raced(
        (d, p, flag),
        (lambda: c.delete_session(sid)) if how == "rm" else (lambda: c.cleanup(0)),
        lambda: complete_raw(d, sid, key),
    )
    if how == "cleanup":
        assert [s["id"] for s in deleted["sessions"]] == [sid], deleted
    assert answered[0] == 404, answered
    assert answered[1]["error"]["code"] == "not_found" and sid in answered[1]["error"]["message"], answered
    with pytest.raises(ApiError) as gone:
        c.get_session(sid)
    assert gone.value.status == 404


@pytest.mark.parametrize("new", [False, True], ids=["history", "new-question"])
def test_the_openai_endpoint_asks_no_model_during_a_delete(held, new):
    """The OpenAI endpoint sends the provider its request before it records the request's new messages: a
    request that came while the session's delete was under way asked the model, whether or not it brought a
    new question (was: the model asked, then the app told the session was gone)."""
    d, p, flag = held("commit.delete", openai_listen="127.0.0.1:0")
    sid = _session(d, "a b c", *(["echo: a b c"] if new else []))
    history = [{"role": "user", "content": "a b c"}]
    if new:
        history += [{"role": "assistant", "content": "echo: a b c"}, {"role": "user", "content": "d e"}]
    app = openai_app(d, sid)
    _, answered = _raced(
        (d, p, flag),
        lambda: d.client().delete_session(sid),
        lambda: app.chat.completions.create(model="echo-1", messages=history),
    )
    assert isinstance(answered, openai.NotFoundError), answered
    assert sid in answered.message, answered.message


def test_a_question_during_an_end_asks_no_model(held):
    """`end` is final: an answer to an ended session is not recorded. A question that came while the end's
    commit was under way read the session still active and asked the model (was: its answer then refused,
    the tokens spent); it waits for the end now, and is refused as an ended session's question is."""
    d, p, flag = held("commit.end")
    sid = _session(d, "a b c")
    ended, answered = _raced((d, p, flag), lambda: d.client().end(sid), lambda: complete_raw(d, sid, None))
    assert ended["status"] == "ended", ended
    assert answered[0] == 409 and "ended" in answered[1]["error"]["message"], answered
    assert [m["role"] for m in d.client().messages(sid)["messages"]] == ["user"]


def test_a_question_does_not_wait_for_a_delete_waiting_for_its_session_s_push(held):
    """`rm` waits for the session's push under way before its transaction (the sync lock: a push to a store
    that is down holds it as long as the store's timeouts and retries take, minutes). The session was marked
    as being deleted from before that wait, so a question to its model meanwhile (`ask`, the OpenAI
    endpoint) waited for the store too, its app hanging. It is marked from the delete's transaction on now
    (what the mark is for: the rows written, not committed): a question that comes before it goes on, as one
    that came before the `rm` does. (The pause point `delete.lock` holds the delete where it waits for the
    lock.)"""
    d, p, flag = held("delete.lock")
    sid = _session(d, "a b c")
    deleted: list = []
    deleting = in_thread(lambda: d.client().delete_session(sid), deleted)
    try:
        wait_for(lambda: os.path.exists(flag), timeout=20, what="the delete waiting for the session's push")
        answered: list = []
        asking = in_thread(lambda: complete_raw(d, sid, None), answered)
        wait_for(lambda: answered or logged(d, "complete.waits_closing"), timeout=20, what="the question")
        assert answered, "the question waits for a delete that waits for a push"
        assert answered[0][0] == 201 and p.requests, answered
    finally:
        if os.path.exists(flag):
            os.remove(flag)
    deleting.join(timeout=30)
    asking.join(timeout=30)
    assert deleted and not isinstance(deleted[0], ApiError), deleted
    with pytest.raises(ApiError) as gone:
        d.client().get_session(sid)
    assert gone.value.status == 404


def test_the_log_read_by_event_leaves_a_record_the_daemon_is_writing_for_the_next_look(tmp_path):
    """`logged` (asking.py) reads the daemon's log while the daemon appends to it: a record is one write of a
    few hundred bytes, and a look between the pages of one that crosses a page boundary reads its first part
    only. That part is not JSON: the look raised, and the test polling with it failed though the daemon was
    right. A last line not ended yet is left for the next look."""
    import json
    import types

    os.makedirs(tmp_path / "logs")
    done = {"event": "complete.waits_closing", "session": "s1"}
    writing = json.dumps({"event": "complete.waits_closing", "session": "s2"})
    with open(tmp_path / "logs" / "sessiond.log", "w") as f:
        f.write(json.dumps(done) + "\n" + writing[: len(writing) // 2])
    d = types.SimpleNamespace(home=str(tmp_path))
    assert logged(d, "complete.waits_closing") == [done]
    with open(tmp_path / "logs" / "sessiond.log", "a") as f:
        f.write(writing[len(writing) // 2 :] + "\n")
    assert logged(d, "complete.waits_closing") == [done, json.loads(writing)]
