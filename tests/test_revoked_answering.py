"""A device left out of a rekey (another device's `unshare --device`) and a question to the session's model
meanwhile. The pull that learns it marks the session `revoked`, whose rows are committed a turn of the loop
after its transaction (the group commit): a question that came in between read the session still writable,
asked the model (the user's tokens spent) and then failed to record its answer, the session revoked. It
waits for the revocation now (as for a delete or an end under way: storage/closing.py) and is refused as a
revoked session's question is, 409 `revoked` naming the way on, the model not asked. Two real daemons, one
folder store, a loopback model."""

from __future__ import annotations

import json
import os

import openai
import pytest

from asking import complete_raw, in_thread, logged, posted
from conftest import cli_json, openai_app, run_cli, started_with_provider, wait_for
from servers.openai_server import Provider, serve_threaded


@pytest.fixture
def pair(make_daemon, tmp_path, request):
    """(A, B, session, provider, FLAG): A made the session and shared it read-write with B, which imported it
    and has a model; B's commit of a revocation waits while FLAG is there (or, given the pause point
    `rekey.left_out` as the fixture's parameter, its pull where it has found a rekey notice that leaves B out
    and is about to check it against the store: sync/rekey.py confirm), and B pulls only when asked."""
    p, server = serve_threaded(Provider())
    url = "file://" + str(tmp_path / "store")
    flag = str(tmp_path / "held")
    a = make_daemon(url).start()
    point = getattr(request, "param", "commit.revoke")
    b = started_with_provider(
        lambda: make_daemon(url, env={"SESSIOND_TEST_PAUSE": f"{point}:{flag}"}),
        f"http://127.0.0.1:{server.port}/v1",
        poll_interval=3600,
        sync_interval=3600,
        openai_listen="127.0.0.1:0",
    )
    sid = a.client().create_session(name="shared", model="echo-1")["id"]
    a.client().append(sid, "user", "a b c")
    code = run_cli(a.home, "share", sid, "--write", check=True).stdout.strip()
    run_cli(b.home, "import", input=code + "\n", check=True)
    yield a, b, sid, p, flag
    if os.path.exists(flag):
        os.remove(flag)
    server.stop()


def _raced(pair, ask):
    """A drops B; B's pull learns it, its commit held; `ask()` sent meanwhile; then the commit let go: what
    the question answered (or raised)."""
    a, b, sid, p, flag = pair
    cli_json(a.home, "unshare", sid, "--device", cli_json(b.home, "status")["device_id"])
    pulled: list = []
    pulling = in_thread(lambda: run_cli(b.home, "sync", "--wait"), pulled)
    wait_for(lambda: os.path.exists(flag), timeout=20, what="the revocation's commit held")
    answered: list = []
    asking = in_thread(ask, answered)
    # the model asked (the bug), or the question waiting for the outcome
    wait_for(lambda: p.requests or logged(b, "complete.waits_closing") or answered, timeout=20, what="the question")
    os.remove(flag)  # the revocation commits
    pulling.join(timeout=30)
    asking.join(timeout=30)
    assert pulled and "rekeyed without this device" in pulled[0].stdout + pulled[0].stderr, pulled
    assert answered, "no answer to the question"
    assert not p.requests, f"the model was asked for a session this device was left out of: {answered}"
    assert b.client().get_session(sid)["access"] == "revoked"
    return answered[0]


def test_a_question_during_a_revocation_asks_no_model(pair):
    _, b, sid, _, _ = pair
    status, body = _raced(pair, lambda: complete_raw(b, sid))
    assert status == 409 and body["error"]["code"] == "revoked", (status, body)
    message = body["error"]["message"]
    assert "rekeyed without this device" in message and "sessiond import" in message, message
    assert "answer was not recorded" not in message, message  # refused before, not after, the model
    assert [m["content"] for m in b.client().messages(sid)["messages"]] == ["a b c"]


def test_the_openai_endpoint_asks_no_model_during_a_revocation(pair):
    """The OpenAI endpoint sends the provider its request before it records the request's new messages: here
    none (the session's history as it is), so nothing at all is written before the model's answer."""
    _, b, sid, _, _ = pair
    app = openai_app(b, sid)
    history = [{"role": "user", "content": "a b c"}]
    answered = _raced(pair, lambda: app.chat.completions.create(model="echo-1", messages=history))
    assert isinstance(answered, openai.BadRequestError), answered  # (the endpoint answers 409s as 400)
    assert "rekeyed without this device" in answered.message, answered.message


@pytest.mark.parametrize("pair", ["rekey.left_out"], indirect=True)
def test_a_question_while_a_pull_checks_a_notice_leaving_this_device_out_asks_no_model(pair):
    """The pull that finds a rekey notice with no box for this device checks it against the store (its author's
    head, the other members': a writer's forgery is refused) before it marks the session revoked: store reads.
    A question that came meanwhile read the session still writable, asked the model (the user's tokens spent),
    and had its answer recorded where no other device reads it (before the revocation; refused after it). The
    session is marked closing from the start of that check now: the question waits for it (CHECK_WAIT at
    most: tests/test_closing_cancelled.py), and is refused as a revoked session's, the model not asked."""
    a, b, sid, p, flag = pair
    cli_json(a.home, "unshare", sid, "--device", cli_json(b.home, "status")["device_id"])
    pulled: list = []
    pulling = in_thread(lambda: run_cli(b.home, "sync", "--wait"), pulled)
    try:
        wait_for(lambda: os.path.exists(flag), timeout=20, what="the pull checking the notice")
        answered: list = []
        asking = in_thread(lambda: complete_raw(b, sid), answered)
        wait_for(lambda: p.requests or logged(b, "complete.waits_closing") or answered, timeout=20, what="the question")
    finally:
        if os.path.exists(flag):
            os.remove(flag)  # the check goes on, and finds the rekey real
    pulling.join(timeout=30)
    asking.join(timeout=30)
    assert pulled and "rekeyed without this device" in pulled[0].stdout + pulled[0].stderr, pulled
    assert not p.requests, f"the model was asked while the pull checked the notice leaving this device out: {answered}"
    status, body = answered[0]
    assert status == 409 and body["error"]["code"] == "revoked", (status, body)
    assert "answer was not recorded" not in body["error"]["message"], body
    assert b.client().get_session(sid)["access"] == "revoked"


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_an_answer_under_way_when_the_revocation_comes_is_not_recorded_and_the_app_is_told(
    make_daemon, tmp_path, stream
):
    """A question asked before this device knew (its model answering) when the pull learns of the rekey: its
    answer is not recorded, as an ended session's is not (nothing written here would reach another device),
    and the app is told so with the way on; a streamed answer's text reached the app before that."""
    p, server = serve_threaded(Provider())
    if stream:
        p.faults.script, p.faults.script_wait = [({"content": "one "}, None), ({"content": "two"}, "stop")], 1
    else:
        p.faults.held = True
    try:
        url = "file://" + str(tmp_path / "store")
        a = make_daemon(url).start()
        b = started_with_provider(
            lambda: make_daemon(url), f"http://127.0.0.1:{server.port}/v1", poll_interval=3600, sync_interval=3600
        )
        sid = a.client().create_session(name="shared", model="echo-1")["id"]
        code = run_cli(a.home, "share", sid, "--write", check=True).stdout.strip()
        run_cli(b.home, "import", input=code + "\n", check=True)
        answered: list = []

        asking = in_thread(lambda: posted(b, sid, {"content": "a b c", "stream": stream}), answered)
        wait_for(lambda: p.requests and (not stream or p.scripted), timeout=20, what="the model answering")
        cli_json(a.home, "unshare", sid, "--device", cli_json(b.home, "status")["device_id"])
        synced = run_cli(b.home, "sync", "--wait")
        assert "rekeyed without this device" in synced.stdout, synced.stdout
        p.resume.set()
        asking.join(timeout=30)
        status, text = answered[0]
        if stream:
            assert status == 200 and '"content": "one "' in text and '"content": "two"' in text, text
            error = json.loads(text.rsplit("event: error\ndata: ", 1)[1])["error"]
            assert "the answer above was not recorded" in error["message"], error
        else:
            assert status == 409, text
            error = json.loads(text)["error"]
            assert "the model's answer was not recorded" in error["message"], error
        assert error["code"] == "revoked" and "sessiond import" in error["message"], error
        # the answer the model gave, not recorded, is the app's still (tests/test_unrecorded_answer.py)
        assert error["details"]["answer"]["content"] == ("one two" if stream else "echo: a b c"), error
        assert [m["role"] for m in b.client().messages(sid)["messages"]] == ["user"]  # the question, no answer
    finally:
        p.resume.set()
        server.stop()


async def test_a_revocation_that_fails_in_its_transaction_lets_the_waiting_question_go_on(db, monkeypatch):
    """The mark a revocation sets (storage/closing.py) is let go when its transaction raises, not only when it
    commits: a question that waited for it goes on, and reads the session as the failure left it (writable);
    a mark left set would hold every later question to the session for ever. On a real database: the writer
    held by the test so that the question comes while the revocation is marked, then the failure."""
    import asyncio

    sid = (await db.create_session({"name": "s"}))["id"]

    def failing(point: str) -> None:  # (inside the revoking transaction, after its UPDATE)
        raise OSError("the disk went away")

    monkeypatch.setattr(db.c, "hold_commit", failing)
    await db.c.group.lock.acquire()  # the revocation waits for the writer, marked
    revoking = asyncio.create_task(db.mark_revoked(sid))
    await asyncio.sleep(0)
    asking = asyncio.create_task(db.closing.settled(sid))
    await asyncio.sleep(0)
    assert not revoking.done() and not asking.done()  # the question waits for the revocation under way
    db.c.group.lock.release()
    with pytest.raises(OSError):
        await asyncio.wait_for(revoking, timeout=5)
    await asyncio.wait_for(asking, timeout=5)
    assert (await db.get_session(sid))["access"] == "owner"  # rolled back
    await asyncio.wait_for(db.closing.settled(sid), timeout=5)  # and no mark left for the next question
