"""An Idempotency-Key is kept by an append (POST /v1/sessions/{id}/messages) and a question (POST
/v1/sessions/{id}/complete) only. Sent with any other request that changes something, it was ignored without
a word: an app that gave one to POST /v1/sessions, as many HTTP APIs take it on every POST, and retried after a
broken connection got two sessions. Such a request is refused (422, naming the routes that keep a key and the
way to retry a create safely, an `id` of the app's own), and nothing is changed."""

from __future__ import annotations

import json

import pytest

from conftest import UnixHTTP


def _send(daemon, method: str, path: str, body: dict | None, key: str | None) -> tuple[int, dict]:
    c = UnixHTTP(daemon.socket, timeout=10)
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Idempotency-Key"] = key
    c.request(method, path, body=None if body is None else json.dumps(body).encode(), headers=headers)
    r = c.getresponse()
    data = json.loads(r.read())
    c.close()
    return r.status, data


@pytest.mark.parametrize(
    "method, path, body",
    [
        ("POST", "/v1/sessions", {"name": "twice"}),
        ("POST", "/v1/sessions/s/clone", {}),
        ("POST", "/v1/sessions/s/chats", {"name": "side"}),
        ("POST", "/v1/sessions/s/pause", None),
    ],
)
def test_a_key_a_route_does_not_keep_is_refused_and_nothing_changes(daemon, method, path, body):
    c = daemon.client()
    c.create_session(id="s", name="first")
    before = c.list_sessions()["sessions"]
    status, data = _send(daemon, method, path, body, "retry-me-1")
    assert status == 422, data
    err = data["error"]
    assert err["code"] == "invalid"
    assert "Idempotency-Key" in err["message"] and f"{method} " in err["message"]
    assert "POST /v1/sessions/{id}/messages" in err["message"], err
    if path == "/v1/sessions":  # the way to retry a create safely
        assert "id" in err["message"]
    assert c.list_sessions()["sessions"] == before
    assert [ch["name"] for ch in c.list_chats("s")["chats"]] == ["main"]
    # without the key, the same request goes through
    status, _ = _send(daemon, method, path, body, None)
    assert status in (200, 201)


def test_the_routes_that_keep_a_key_and_reads_still_take_it(daemon):
    c = daemon.client()
    c.create_session(id="s")
    first = _send(daemon, "POST", "/v1/sessions/s/messages", {"role": "user", "content": "hi"}, "k-1")
    again = _send(daemon, "POST", "/v1/sessions/s/messages", {"role": "user", "content": "hi"}, "k-1")
    assert first[0] == again[0] == 201 and first[1]["id"] == again[1]["id"]
    assert len(c.messages("s")["messages"]) == 1
    status, data = _send(daemon, "GET", "/v1/sessions/s", None, "k-2")  # a read changes nothing either way
    assert status == 200 and data["id"] == "s"


@pytest.mark.parametrize(
    "method, path, body", [("PATCH", "/v1/sessions/s", {"name": "renamed"}), ("DELETE", "/v1/sessions/s", None)]
)
def test_a_change_whose_retry_comes_to_the_same_end_ignores_a_key(daemon, method, path, body):
    """A client library may send an Idempotency-Key with every change: PATCH and DELETE, whose retry comes to the
    same end, take the request and ignore it."""
    c = daemon.client()
    c.create_session(id="s", name="first")
    status, _ = _send(daemon, method, path, body, "retry-me-2")
    assert status in (200, 204), status
    if method == "DELETE":
        assert c.list_sessions()["sessions"] == []
    else:
        assert c.get_session("s")["name"] == "renamed"
