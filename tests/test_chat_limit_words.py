"""max_chats_per_session's refusals name what the user asked about and the way out (was: a clone or fork
refused named the id the copy would have had, one the user never saw ("session '01m9...' would have 3
chats"), with no way out; and `chat new` said a session "already has 2 chats" that held 3, once the limit
was lowered below what it held)."""

from __future__ import annotations

import contextlib

import pytest

from conftest import DaemonProc, run_cli, write_config
from sessiond.client import ApiError


@contextlib.contextmanager
def started(home, **settings):
    """A daemon on `home` with `settings` in its config.toml, stopped however the block ends."""
    write_config(home, **settings)
    d = DaemonProc(home).start()
    try:
        yield d
    finally:
        d.stop()


@pytest.fixture
def lowered(home):
    """A daemon whose session 'three' holds three chats (and a message), restarted with a limit of two."""
    d = DaemonProc(home).start()
    c = d.client()
    c.create_session(id="three")
    c.create_chat("three", name="b")
    c.create_chat("three", name="c")
    at = c.append("three", "user", "hi")["id"]
    d.stop()
    write_config(home, max_chats_per_session=2)
    d.start()
    yield d, at
    d.stop()


def test_a_clone_or_fork_past_the_chat_limit_names_its_source_and_the_way_out(lowered):
    d, at = lowered
    c = d.client()
    before = {s["id"] for s in c.list_sessions()["sessions"]}
    for make, words in (
        (lambda: c.clone("three"), "a clone of session 'three'"),
        (lambda: c.fork("three", at), f"a fork of session 'three' at message {at!r}"),
    ):
        with pytest.raises(ApiError) as e:
            make()
        said = e.value.message
        assert e.value.code == "limit_reached" and words in said, said
        assert "would have 3 chats" in said and "max_chats_per_session (2)" in said, said
        assert "config.toml" in said and "sessiond new" in said, said
    assert {s["id"] for s in c.list_sessions()["sessions"]} == before  # nothing made
    res = run_cli(d.home, "clone", "three")
    assert res.returncode == 1 and "a clone of session 'three'" in res.stderr, res.stderr


def test_a_new_chat_past_a_lowered_limit_says_how_many_the_session_has(lowered):
    d, _ = lowered
    with pytest.raises(ApiError) as e:
        d.client().create_chat("three", name="d")
    said = e.value.message
    assert "already has 3 chats" in said and "max_chats_per_session (2)" in said, said
    assert "sessiond chat switch" in said and "config.toml" in said, said


def test_a_batch_larger_than_any_chat_may_hold_is_not_sent_to_another_chat_or_a_clone(home):
    """max_messages_per_chat: a batch of more messages than the cap itself was told to go on in another chat
    or a clone, where it cannot fit either (an app following `details.api` made a chat and was refused again).
    It is told that no chat takes that many at once: split it, or raise the setting."""
    with started(home, max_messages_per_chat=3) as d:
        c = d.client()
        sid = c.create_session()["id"]
        with pytest.raises(ApiError) as e:
            c.append_many(sid, [{"role": "user", "content": f"m{i}"} for i in range(4)])
        said, details = e.value.message, e.value.details
        assert e.value.code == "limit_reached" and details["limit"] == "max_messages_per_chat", said
        assert "4 messages" in said and "at most 3" in said and "config.toml" in said, said
        assert "chat new" not in said and "sessiond clone" not in said, said
        assert details.get("api", []) == [] and details["owner"], details
        assert c.get_session(sid)["message_count"] == 0
        # a batch that fits a chat, but not this one's room, still names the ways on
        c.append_many(sid, [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}])
        with pytest.raises(ApiError) as e:
            c.append_many(sid, [{"role": "user", "content": "c"}, {"role": "user", "content": "d"}])
        assert "chat new" in e.value.message and "sessiond clone" in e.value.message, e.value.message


def test_a_context_overflow_names_another_chat_only_while_the_session_has_room_for_one(home):
    """A chat over its context budget with automatic compaction off was told to start another chat (and
    `details.api` held `POST .../chats`) even when max_chats_per_session left no room for one: the app that
    followed it was refused with limit_reached. Another chat is named only while one can be made."""
    with started(home, max_chats_per_session=1) as d:
        c = d.client()
        sid = c.create_session(max_context_tokens=50, auto_compact=False)["id"]
        c.append(sid, "user", "a", tokens=30)
        with pytest.raises(ApiError) as e:
            c.append(sid, "user", "b", tokens=15)
        said, api = e.value.message, e.value.details["api"]
        assert e.value.code == "context_overflow" and "--auto-compact" in said, said
        assert "chat new" not in said and not any("/chats" in way for way in api), (said, api)
        assert len(api) == 2, api  # compact, or automatic compaction on
        # with room for a chat (the limit raised), it is named again
        d.stop()
        write_config(home, max_chats_per_session=2)
        d.start()
        with pytest.raises(ApiError) as e:
            d.client().append(sid, "user", "b", tokens=15)
        assert "chat new" in e.value.message and any("/chats" in w for w in e.value.details["api"]), e.value


def test_a_new_chat_past_a_limit_of_one_is_not_sent_to_switch_chats(home):
    """At max_chats_per_session = 1, `chat new` was refused with "already has 1 chats ... go on in one of them
    (`sessiond chat switch ID CHAT`)" and that switch in `details.api`: the one chat is the current one, so the
    way led nowhere. It says the session's one chat, and names the setting only."""
    with started(home, max_chats_per_session=1) as d:
        c = d.client()
        sid = c.create_session()["id"]
        with pytest.raises(ApiError) as e:
            c.create_chat(sid, name="second")
        said = e.value.message
        assert e.value.code == "limit_reached" and "already has its one chat" in said, said
        assert "chat switch" not in said and "config.toml" in said, said
        assert e.value.details.get("api", []) == [] and e.value.details["owner"], e.value.details
