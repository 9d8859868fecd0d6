"""The socket API's durations are numbers of seconds: `older_than` of a clean-up, `expires_in` of a session
and of a share code, `idle_timeout`, `grace` of a gc and `timeout` of a sync. One given as the CLI writes it
("30d") was refused with "older_than must be a finite number", which did not say what it is a number of:
the refusal names the unit, and so does one out of range. Nothing is changed. A real daemon over its socket."""

from __future__ import annotations

import pytest

from conftest import cli_json
from sessiond.client import ApiError


def _refusal(call) -> str:
    with pytest.raises(ApiError) as e:
        call()
    assert e.value.status == 422 and e.value.code == "invalid", e.value
    return e.value.message


def _shown(c, sid: str) -> dict:
    """The session as the API gives it, without its sync state (a push may finish meanwhile)."""
    return {k: v for k, v in c.get_session(sid).items() if k != "sync"}


def test_a_duration_the_api_refuses_is_named_as_seconds(daemon):
    c = daemon.client()
    sid = c.create_session(name="kept")["id"]
    before = _shown(c, sid)
    for field, call in (
        ("older_than", lambda: c.cleanup(older_than="30d", dry_run=True)),
        ("expires_in", lambda: c.create_session(expires_in="7d")),
        ("idle_timeout", lambda: c.update_session(sid, idle_timeout="1h")),
        ("expires_in", lambda: c.share(sid, expires_in="1d")),
        ("grace", lambda: c.gc(dry_run=True, grace="1d")),
        ("timeout", lambda: c.sync(timeout="1m")),
    ):
        message = _refusal(call)
        assert message.startswith(field) and "seconds" in message, (field, message)
    message = _refusal(lambda: c.create_session(expires_in=0))
    assert message.startswith("expires_in must be between 1 and") and "seconds" in message, message
    assert [s["id"] for s in c.list_sessions()["sessions"]] == [sid]  # nothing made
    assert _shown(c, sid) == before  # nor changed
    assert cli_json(daemon.home, "shares") == {"shares": []}  # nor a code issued


def test_a_number_given_as_text_or_a_boolean_is_named_so(daemon):
    """A numeric field given `true` or `"5"` was refused as "must be a finite number", which reads as if the
    value were too big or NaN: the refusal says what it got (a boolean, text) and, for text holding a number,
    to write it without quotes. Nothing is changed."""
    c = daemon.client()
    sid = c.create_session(name="kept")["id"]
    before = _shown(c, sid)
    message = _refusal(lambda: c.update_session(sid, idle_timeout=True))
    assert message.startswith("idle_timeout must be a number") and "not a boolean" in message, message
    message = _refusal(lambda: c.update_session(sid, idle_timeout="3600"))
    assert "not text" in message and "without quotes" in message and "seconds" in message, message
    message = _refusal(lambda: c.update_session(sid, idle_timeout=float("nan")))
    assert "finite" in message, message
    assert _shown(c, sid) == before
