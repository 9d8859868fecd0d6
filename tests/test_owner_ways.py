"""Refusals whose way on is, in whole or in part, the daemon's owner's (a config.toml limit raised, sessiond
upgraded, the store moved, another home, a relay's invite) named it in their message only: an app, which has
no config.toml and no CLI, found no `details.api` and nothing else to go by but the words. Each now carries
`details.owner`, those ways in words, in a list (README, "The socket API", Errors); a limit's refusal its
setting and value too (`details.limit`, `details.value`), as it did."""

from __future__ import annotations

import pytest

from conftest import started_with
from sessiond.client import ApiError


def _raise(limit: str, value: int) -> list[str]:
    return [f"raise {limit} in the daemon's config.toml (now {value}), then restart the daemon"]


def test_each_config_limit_refusal_names_the_owners_way(make_daemon):
    d = started_with(make_daemon, max_active_sessions=2, max_chats_per_session=2, max_messages_per_chat=2)
    c = d.client()
    sid = c.create_session(name="one")["id"]
    c.create_session(name="two")
    refusals = []
    with pytest.raises(ApiError) as e:
        c.create_session(name="three")
    refusals.append((e.value, "max_active_sessions", 2))
    c.create_chat(sid)  # (two chats: one to switch to, the app's own way on; test_chat_limit_words.py: one)
    with pytest.raises(ApiError) as e:
        c.create_chat(sid)
    refusals.append((e.value, "max_chats_per_session", 2))
    c.append(sid, "user", "a")
    c.append(sid, "user", "b")
    with pytest.raises(ApiError) as e:
        c.append(sid, "user", "c")
    refusals.append((e.value, "max_messages_per_chat", 2))
    for err, limit, value in refusals:
        assert err.code == "limit_reached", err.message
        assert (err.details["limit"], err.details["value"]) == (limit, value), err.details
        assert err.details["owner"] == _raise(limit, value), err.details
        assert limit in err.message and err.details["api"], err.details  # (the app's own ways, as before)


def test_a_refusal_an_app_can_act_on_names_no_owners_way(daemon):
    c = daemon.client()
    sid = c.create_session(name="paused")["id"]
    c.pause(sid)
    with pytest.raises(ApiError) as e:
        c.append(sid, "user", "hi")
    assert e.value.details["api"] and "owner" not in e.value.details, e.value.details


def _newer_code(code: str) -> str:
    """`code` as a sessiond of a later share code version would write it (its version byte 2, its checksum
    made again)."""
    import base64

    from sessiond.sync.sharecode import PREFIX, _checksum

    data = code[len(PREFIX) :].upper()
    raw = base64.b32decode(data + "=" * (-len(data) % 8))
    body = bytes([2]) + raw[1 : -len(_checksum(b""))]
    return PREFIX + base64.b32encode(body + _checksum(body)).decode().lower().rstrip("=")


def test_a_share_code_of_a_newer_version_names_the_upgrade(daemon):
    c = daemon.client()
    code = c.share(c.create_session(name="shared")["id"])["code"]
    with pytest.raises(ApiError) as e:
        c.import_code(_newer_code(code))
    err = e.value
    assert err.code == "version" and "upgrade sessiond" in err.message, err.message
    assert err.details["owner"] == [
        "upgrade sessiond on this device (pip install --upgrade sessiond), then import the code again"
    ], err.details
    assert "api" not in err.details
