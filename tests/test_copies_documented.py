"""What a clone and a fork copy of their source, and what not, as the README's `clone` and `fork` rows say."""

from __future__ import annotations

from conftest import wait_for


def test_what_a_clone_and_a_fork_copy(daemon):
    c = daemon.client()
    spec = dict(
        user="ann",
        name="orig",
        system_prompt="be brief",
        model="m1",
        settings={"temperature": 0.3},
        initial_messages=[{"role": "user", "content": "context"}],
        metadata={"k": 1},
        tags=["t"],
        preferences={"p": 1},
        policy={"token_quota": 100, "checkpoint_interval": 20, "idle_timeout": 3600, "max_context_tokens": 500},
    )
    sid = c.create_session(**spec, expires_in=86400)["id"]
    c.create_chat(sid, id="side", name="Side", system_prompt="side prompt", model="m2", switch=True)
    for i in range(3):
        c.append(sid, "user", f"m{i}", tokens=10, chat="main")
    c.compact(sid, chat="main", target_tokens=10)  # m0 and m1 set aside
    at = c.append(sid, "user", "m3", tokens=10, chat="main")["id"]  # the fork's point: m2 and m3 active
    c.append(sid, "user", "after", tokens=60)  # (in the current chat, side): the quota spent
    assert c.quota(sid)["level"] == "exhausted"
    wait_for(lambda: c.checkpoints(sid)["checkpoints"], what="the source's checkpoint at its interval")
    c.pause(sid)
    src = c.get_session(sid)
    own = {k: src[k] for k in spec}  # (as stored: the initial message with its token count)
    chats = [
        {k: ch[k] for k in ("id", "name", "system_prompt", "model", "settings", "policy")}
        for ch in c.list_chats(sid)["chats"]
    ]

    clone = c.clone(sid)
    fork = c.fork(sid, at)
    for copy in (clone, fork):
        assert {k: copy[k] for k in spec} == own  # the session's own fields, its policy whole
        assert copy["status"] == "active" and copy["expires_at"] is None  # neither its status nor its expiry
        assert copy["access"] == "owner" and copy["id"] != sid
        got = [
            {k: ch[k] for k in ("id", "name", "system_prompt", "model", "settings", "policy")}
            for ch in c.list_chats(copy["id"])["chats"]
        ]
        assert got == chats
    # a clone: no history, no tokens used, no compaction, no checkpoint; the source's current chat
    assert clone["current_chat"] == "side" and c.quota(clone["id"])["tokens_used"] == 0
    assert (
        c.get_session(
            clone["id"],
        )["message_count"]
        == 0
    )
    assert c.context(clone["id"], "main")["compacted_upto"] is None
    assert c.checkpoints(clone["id"])["checkpoints"] == []
    # a fork: the history up to the message, in that message's chat, compacted as it stood, its tokens used
    assert fork["current_chat"] == "main" and fork["provenance"]["copied_tokens"] == 40
    assert c.quota(fork["id"])["tokens_used"] == 40
    ctx = c.context(fork["id"], "main")
    assert (ctx["active_messages"], ctx["compacted_messages"]) == (2, 2), ctx
    # its own first checkpoint, its copied tokens (40) past its interval (20): over the copy, signed here
    wait_for(lambda: c.checkpoints(fork["id"])["checkpoints"], what="the fork's own checkpoint")
    [proof] = c.checkpoints(fork["id"])["checkpoints"]
    assert (proof["session"], proof["messages"], proof["tokens"]) == (fork["id"], 4, 40)
