"""A session ended by `sessiond end`: its conversation is final (no message, no chat made or changed, no
compaction), and it is still filed as its owner likes (a name, tags, metadata, its expiry). Was: a `set` of
what its conversation is (its system prompt, its initial messages, its model and settings, its context policy)
was taken, though the same change of a chat of it is refused: the ended conversation rewritten under its final
checkpoint."""

from __future__ import annotations

import pytest

from sessiond.client import ClientError


@pytest.mark.parametrize(
    "change",
    [
        {"system_prompt": "be someone else"},
        {"initial_messages": [{"role": "user", "content": "a new start"}]},
        {"model": "echo-2"},
        {"settings": {"temperature": 0.1}},
        {"max_context_tokens": 5000},
    ],
    ids=["system_prompt", "initial_messages", "model", "settings", "policy"],
)
def test_a_session_ended_by_hand_takes_no_set_of_its_conversation(daemon, change):
    c = daemon.client()
    sid = c.create_session(model="echo-1", name="s", system_prompt="be brief")["id"]
    c.append(sid, "user", "hi")
    c.end(sid)
    before = c.get_session(sid)
    with pytest.raises(ClientError) as exc:
        c.update_session(sid, **change)
    assert exc.value.status == 409 and exc.value.code == "conflict", exc.value
    assert "has ended" in exc.value.message and next(iter(change)) in exc.value.message, exc.value
    unsynced = lambda s: {k: v for k, v in s.items() if k != "sync"}  # noqa: E731  (its push goes on meanwhile)
    assert unsynced(c.get_session(sid)) == unsynced(before)


def test_a_session_ended_by_hand_is_still_filed(daemon):
    c = daemon.client()
    sid = c.create_session(model="echo-1", name="s", system_prompt="be brief", max_context_tokens=4000)["id"]
    c.end(sid)
    s = c.update_session(
        sid, name="filed", tags=["done"], metadata={"project": "x"}, expires_in=7200, idle_timeout=86400
    )
    assert (s["name"], s["tags"], s["metadata"], s["status"]) == ("filed", ["done"], {"project": "x"}, "ended")
    # the same conversation given again is no change of it: taken (an app that PATCHes the whole session)
    again = c.update_session(sid, system_prompt="be brief", model="echo-1", max_context_tokens=4000, name="f2")
    assert again["name"] == "f2" and again["system_prompt"] == "be brief"
