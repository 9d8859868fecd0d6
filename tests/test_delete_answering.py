"""A question to a model (POST .../complete with no new question: nothing is written before the answer) that
comes while a session's delete is under way is answered as the delete ends: the session gone, 404, and the
model not asked. Was: a delete's rows are committed a turn of the loop after its transaction (the group
commit), and a `complete` that came in between read the session still there, asked the model (the user's
tokens spent) and then failed to record the answer, the session gone. `rm` and the clean-up alike (the
expiry's clean-up deletes through the same path)."""

from __future__ import annotations

import json
import os
import threading

import openai
import pytest

from conftest import UnixHTTP, openai_app, started_with_provider, wait_for
from servers.openai_server import Provider, serve_threaded
from sessiond.client import ApiError


@pytest.fixture
def held(make_daemon, tmp_path):
    """A daemon whose deletes' commits wait while FLAG is there (their transactions done, their rows not
    committed), and a model: (daemon, provider, FLAG)."""
    flag = str(tmp_path / "delete-commit")
    p, server = serve_threaded(Provider())
    pause = {"SESSIOND_TEST_PAUSE": f"commit.delete:{flag}"}
    yield started_with_provider(lambda: make_daemon(env=pause), f"http://127.0.0.1:{server.port}/v1"), p, flag
    server.stop()


def _logged(d, event: str) -> list[dict]:
    with open(os.path.join(d.home, "logs", "sessiond.log")) as f:
        return [x for x in map(json.loads, f) if x.get("event") == event]


def _complete(d, sid: str, key: str | None) -> tuple[int, dict]:
    """POST .../complete with no new question, as an app without the Python client sends it: no
    Idempotency-Key unless `key`."""
    c = UnixHTTP(d.socket, timeout=60)
    headers = {"Content-Type": "application/json", **({"Idempotency-Key": key} if key else {})}
    c.request("POST", f"/v1/sessions/{sid}/complete", body="{}", headers=headers)
    r = c.getresponse()
    got = (r.status, json.loads(r.read()))
    c.close()
    return got


def _run(fn, out: list) -> threading.Thread:
    def go():
        try:
            out.append(fn())
        except ApiError as exc:
            out.append(exc)

    t = threading.Thread(target=go)
    t.start()
    return t


@pytest.mark.parametrize("how,key", [("rm", None), ("cleanup", None), ("rm", "k-1")])
def test_a_question_during_a_delete_asks_no_model(held, how, key):
    d, p, flag = held
    c = d.client()
    sid = c.create_session(model="echo-1")["id"]
    c.append(sid, "user", "a b c")
    deleted: list = []
    deleting = _run(
        (lambda: d.client().delete_session(sid)) if how == "rm" else (lambda: d.client().cleanup(0)), deleted
    )
    wait_for(lambda: os.path.exists(flag), timeout=20, what="the delete's commit held")
    answered: list = []
    asking = _run(lambda: _complete(d, sid, key), answered)
    # the model asked (the bug), or the question waiting for the delete's outcome
    wait_for(lambda: p.requests or _logged(d, "complete.waits_delete"), timeout=20, what="the question taken")
    os.remove(flag)  # the delete commits
    deleting.join(timeout=30)
    asking.join(timeout=30)
    assert deleted and not isinstance(deleted[0], ApiError), deleted
    if how == "cleanup":
        assert [s["id"] for s in deleted[0]["sessions"]] == [sid], deleted
    assert not p.requests, f"the model was asked for a session being deleted, its answer lost: {answered}"
    assert answered and answered[0][0] == 404, answered
    error = answered[0][1]["error"]
    assert error["code"] == "not_found" and sid in error["message"], error
    with pytest.raises(ApiError) as gone:
        c.get_session(sid)
    assert gone.value.status == 404


@pytest.fixture
def held_openai(make_daemon, tmp_path):
    """As `held`, with the OpenAI-compatible listener on."""
    flag = str(tmp_path / "delete-commit")
    p, server = serve_threaded(Provider())
    pause = {"SESSIOND_TEST_PAUSE": f"commit.delete:{flag}"}
    url = f"http://127.0.0.1:{server.port}/v1"
    yield started_with_provider(lambda: make_daemon(env=pause), url, openai_listen="127.0.0.1:0"), p, flag
    server.stop()


@pytest.mark.parametrize("new", [False, True], ids=["history", "new-question"])
def test_the_openai_endpoint_asks_no_model_during_a_delete(held_openai, new):
    """The OpenAI endpoint sends the provider its request before it records the request's new messages: a
    request that came while the session's delete was under way asked the model, whether or not it brought a
    new question (was: the model asked, then the app told the session was gone)."""
    d, p, flag = held_openai
    c = d.client()
    sid = c.create_session(model="echo-1")["id"]
    c.append(sid, "user", "a b c")
    history = [{"role": "user", "content": "a b c"}]
    if new:
        c.append(sid, "assistant", "echo: a b c")
        history += [{"role": "assistant", "content": "echo: a b c"}, {"role": "user", "content": "d e"}]
    app = openai_app(d, sid)
    deleted: list = []
    deleting = _run(lambda: d.client().delete_session(sid), deleted)
    wait_for(lambda: os.path.exists(flag), timeout=20, what="the delete's commit held")
    answered: list = []

    def ask():
        try:
            answered.append(app.chat.completions.create(model="echo-1", messages=history))
        except openai.APIStatusError as exc:
            answered.append(exc)

    asking = threading.Thread(target=ask)
    asking.start()
    wait_for(
        lambda: p.requests or _logged(d, "complete.waits_delete") or answered, timeout=20, what="the request taken"
    )
    os.remove(flag)  # the delete commits
    deleting.join(timeout=30)
    asking.join(timeout=30)
    assert deleted and not isinstance(deleted[0], ApiError), deleted
    assert not p.requests, f"the model was asked for a session being deleted: {answered}"
    assert answered and isinstance(answered[0], openai.NotFoundError), answered
    assert sid in answered[0].message, answered[0].message
