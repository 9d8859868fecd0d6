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
    d = started_with(make_daemon, max_active_sessions=2, max_chats_per_session=1, max_messages_per_chat=2)
    c = d.client()
    sid = c.create_session(name="one")["id"]
    c.create_session(name="two")
    refusals = []
    with pytest.raises(ApiError) as e:
        c.create_session(name="three")
    refusals.append((e.value, "max_active_sessions", 2))
    with pytest.raises(ApiError) as e:
        c.create_chat(sid)
    refusals.append((e.value, "max_chats_per_session", 1))
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
