"""A session its expiry (or idle timeout) ended is refused as expired, naming when, whether the clean-up
ended it before the write came or the write found it past its expiry (was: once the clean-up had ended it,
within a second of the expiry, a question or an append was refused 409 `conflict` "has ended", with no
word of the expiry, so apps almost never saw the `expired` code). One ended by hand is still refused as
ended (`conflict`). The end an expiry makes says so in its operation, so a device it was shared with
refuses it the same way."""

from __future__ import annotations

import json

import pytest

from conftest import run_cli, started_with_provider, wait_for
from servers.openai_server import Provider, serve_threaded
from sessiond.client import ClientError


@pytest.fixture
def daemon(make_daemon):
    p, server = serve_threaded(Provider())
    yield started_with_provider(make_daemon, f"http://127.0.0.1:{server.port}/v1")
    server.stop()


def _ended(c, sid: str) -> None:
    wait_for(lambda: c.get_session(sid)["status"] == "ended", timeout=30, what="the clean-up ending the session")


def _ask_json(d, sid: str) -> dict:
    res = run_cli(d.home, "ask", sid, "still there?", "--json")
    assert res.returncode == 1, (res.stdout, res.stderr)
    return json.loads(res.stdout)["error"]


@pytest.mark.parametrize("how", ["expires_in", "idle_timeout"])
def test_a_session_the_clean_up_ended_at_its_expiry_is_refused_as_expired(daemon, how):
    c = daemon.client()
    sid = c.create_session(model="echo-1", **{how: 1})["id"]
    _ended(c, sid)
    err = _ask_json(daemon, sid)
    assert err["code"] == "expired", err
    assert "expired at" in err["message"] and "sessiond clone" in err["message"], err
    if how == "idle_timeout":
        assert "idle" in err["message"], err
    with pytest.raises(ClientError) as exc:
        c.append(sid, "user", "too late")
    assert exc.value.status == 409 and exc.value.code == "expired", exc.value
    assert exc.value.details.get("expired_at"), exc.value.details
    with pytest.raises(ClientError) as exc:
        c.complete(sid, "too late")
    assert exc.value.status == 409 and exc.value.code == "expired", exc.value


def test_a_session_ended_by_hand_is_refused_as_ended(daemon):
    c = daemon.client()
    sid = c.create_session(model="echo-1", expires_in=3600)["id"]
    c.end(sid)
    err = _ask_json(daemon, sid)
    assert err["code"] == "conflict" and "has ended" in err["message"], err
    with pytest.raises(ClientError) as exc:
        c.append(sid, "user", "too late")
    assert exc.value.code == "conflict" and "has ended" in exc.value.message, exc.value


def test_resuming_or_pausing_a_session_its_expiry_ended_is_refused_as_expired(daemon):
    """A session paused, then ended by its expiry while paused (the owner's "I'll come back to it"): `resume`
    was refused 409 `conflict` "has ended; an ended session cannot be paused or resumed", no word of the
    expiry the owner never saw happen, where an append to it is `expired`, naming when. Both status changes
    are refused as the append is, and change nothing; one ended by hand still says it has ended."""
    c = daemon.client()
    sid = c.create_session(model="echo-1", expires_in=1)["id"]
    c.pause(sid)
    _ended(c, sid)
    # the end's final checkpoint commits after the end (its op moves last_activity on): waited for, not compared
    wait_for(lambda: c.checkpoints(sid)["checkpoints"], timeout=30, what="the end's checkpoint")
    before = c.get_session(sid)
    for change in ("resume", "pause"):
        res = run_cli(daemon.home, change, sid, "--json")
        err = json.loads(res.stdout)["error"]
        assert res.returncode == 1 and err["code"] == "expired", (res.stdout, res.stderr)
        assert "expired at" in err["message"] and "sessiond clone" in err["message"], err
    with pytest.raises(ClientError) as exc:
        c.resume(sid)
    assert exc.value.status == 409 and exc.value.code == "expired" and exc.value.details.get("expired_at")
    unsynced = lambda s: {k: v for k, v in s.items() if k != "sync"}  # noqa: E731  (its push goes on meanwhile)
    assert unsynced(c.get_session(sid)) == unsynced(before)
    by_hand = c.create_session(model="echo-1", expires_in=3600)["id"]
    c.end(by_hand)
    with pytest.raises(ClientError) as exc:
        c.resume(by_hand)
    assert exc.value.code == "conflict" and "has ended" in exc.value.message, exc.value


def test_a_session_its_expiry_ended_takes_no_set_of_its_fields(daemon):
    """A session its expiry ended still took `set` of its own fields (a PATCH: name, tags, prompt, expiry, ...),
    while every refusal of it says "an expired session takes no more changes". A changed expiry even rewrote
    why it expired: given a later expires_at, the refusals said it had been idle past its idle timeout, which
    it had none of. `set` is refused as the rest is, 409 `expired` naming when, nothing changed; one ended by
    hand is filed as its owner likes still (a name, tags), as README says."""
    c = daemon.client()
    sid = c.create_session(model="echo-1", name="s", expires_in=1)["id"]
    _ended(c, sid)
    wait_for(lambda: c.checkpoints(sid)["checkpoints"], timeout=30, what="the end's checkpoint")
    before = c.get_session(sid)
    for change in ({"name": "renamed"}, {"expires_in": 7200}, {"tags": ["x"]}):
        with pytest.raises(ClientError) as exc:
            c.update_session(sid, **change)
        assert exc.value.status == 409 and exc.value.code == "expired", (change, exc.value)
        assert "expired at" in exc.value.message and "idle" not in exc.value.message, exc.value
    res = run_cli(daemon.home, "set", sid, "--name", "renamed", "--json")
    assert res.returncode == 1 and json.loads(res.stdout)["error"]["code"] == "expired", (res.stdout, res.stderr)
    # its chats too (final in any ended session): refused as expired, not as a conflict saying nothing of it
    for change in (lambda: c.create_chat(sid, name="n"), lambda: c.update_chat(sid, "main", name="m")):
        with pytest.raises(ClientError) as exc:
            change()
        assert exc.value.status == 409 and exc.value.code == "expired", exc.value
    with pytest.raises(ClientError) as exc:
        c.compact(sid)
    assert exc.value.code == "expired", exc.value
    unsynced = lambda s: {k: v for k, v in s.items() if k != "sync"}  # noqa: E731  (its push goes on meanwhile)
    assert unsynced(c.get_session(sid)) == unsynced(before)
    by_hand = c.create_session(model="echo-1", name="b")["id"]
    c.end(by_hand)
    assert c.update_session(by_hand, name="filed", tags=["done"])["name"] == "filed"
