"""kill -9 right after the operations that are one write transaction each (a chat made, renamed, switched to;
a session's settings, prompts and metadata changed; a compaction and its undo; a pause and its resume; a
clone): each was answered only once its COMMIT was durable (storage/groupcommit.py), so after the restart
every one is there, verify and doctor are clean, and a device the session is shared with converges on them."""

from __future__ import annotations

import json

import pytest

from conftest import cli_json, run_cli, wait_for
from sessiond.client import ApiError


def _state(c, sid: str) -> dict:
    """What the operations changed, as each device shows it."""
    s = c.get_session(sid)
    chats = {ch["id"]: (ch["name"], ch["system_prompt"], ch["model"]) for ch in c.list_chats(sid)["chats"]}
    return {
        "name": s["name"],
        "system_prompt": s["system_prompt"],
        "metadata": s["metadata"],
        "tags": s["tags"],
        "status": s["status"],
        "current_chat": s["current_chat"],
        "chats": chats,
        "compacted": {cid: c.context(sid, cid)["compacted_upto"] for cid in chats},
        "messages": [m["content"] for m in c.messages(sid, limit=1000)["messages"]],
    }


def _shared(make_daemon, store_dir: str, name: str, n: int):
    """Devices A and B on one folder store, and a session of A's with `n` messages that B imported, writable."""
    url = f"file://{store_dir}"
    a, b = make_daemon(url).start(), make_daemon(url).start()
    c = a.client()
    sid = c.create_session(name=name)["id"]
    c.append_many(sid, [{"role": "user", "content": f"m{i}", "tokens": 10} for i in range(n)])
    b.client().import_code(c.share(sid, write=True)["code"])
    return a, b, sid


def test_one_transaction_operations_answered_before_a_kill_9_are_all_there_after_it(make_daemon, store_dir):
    a, b, sid = _shared(make_daemon, store_dir, "before", 20)
    c = a.client()
    main = c.get_session(sid)["current_chat"]
    side = c.create_chat(sid, name="side", system_prompt="be brief")["id"]
    c.update_chat(sid, side, name="renamed", model="m-2")
    c.switch_chat(sid, side)
    c.append(sid, "user", "in the side chat")
    c.switch_chat(sid, main)
    c.switch_chat(sid, side)  # the last switch stands
    c.update_session(sid, name="after", system_prompt="a prompt", metadata={"k": 1}, tags=["t1"])
    c.compact(sid, chat=main, target_tokens=50)
    c.compact(sid, chat=side, target_tokens=1)
    c.uncompact(sid, chat=side)
    c.pause(sid)
    c.resume(sid)
    c.pause(sid)
    clone = c.clone(sid, new_id="cloned", name="a clone")["id"]
    want, want_clone = _state(c, sid), _state(c, clone)
    assert want["compacted"][main] is not None and want["compacted"][side] is None
    a.kill()  # SIGKILL right after the last answer: nothing flushed, nothing cleaned up
    a.start()
    c = a.client()
    assert _state(c, sid) == want
    assert _state(c, clone) == want_clone
    cli_json(a.home, "sync", "--wait")
    assert cli_json(a.home, "verify")["ok"]
    assert run_cli(a.home, "doctor", "--json").returncode == 0

    def converged() -> bool:
        b.client().sync(sid, wait=True, timeout=10)
        return _state(b.client(), sid) == want

    wait_for(converged, timeout=30, what="the other device has every operation answered before the kill")
    assert cli_json(b.home, "verify")["ok"]


def test_an_export_killed_writing_its_file_leaves_the_file_it_replaces_whole(make_daemon, tmp_path):
    """`export -o FILE --force` killed (as under kill -9) with the new file written and not yet renamed over FILE:
    FILE holds the export before, whole; run again, the new one, whole."""
    d = make_daemon().start()
    c = d.client()
    sid = c.create_session(name="exported")["id"]
    c.append(sid, "user", "first")
    out = tmp_path / "s.json"
    run_cli(d.home, "export", sid, "-o", str(out), check=True)
    before = out.read_bytes()
    c.append_many(sid, [{"role": "user", "content": "x" * 10_000} for _ in range(20)])
    res = run_cli(d.home, "export", sid, "-o", str(out), "--force", env={"SESSIOND_CRASH_AT": "write:s.json"})
    assert res.returncode == 137, res.stderr
    assert out.read_bytes() == before
    run_cli(d.home, "export", sid, "-o", str(out), "--force", check=True)
    assert len(json.loads(out.read_bytes())["messages"]) == 21


def test_settings_checkpoints_forks_ends_and_deletes_answered_are_there_after_a_kill_9_at_each(make_daemon, store_dir):
    """Each operation answered, then kill -9 at once, then the next: a session's model, settings, policy (its
    token quota), preferences, user and expiry changed; a checkpoint asked for; a fork at a message; another
    session ended, another deleted. After each restart every operation answered so far is there (a checkpoint
    still verifies), verify and doctor are clean, and a device the session is shared with converges."""
    a, b, sid = _shared(make_daemon, store_dir, "s", 10)
    c = a.client()
    ended, gone = c.create_session(name="to end")["id"], c.create_session(name="to delete")["id"]
    for x in (ended, gone):
        c.append(x, "user", "hello")
    at = c.messages(sid, limit=1000)["messages"][4]["id"]
    fields = ("model", "settings", "policy", "preferences", "user", "expires_at")

    def session_state(c, sid: str) -> dict:
        s = c.get_session(sid)
        return {k: s.get(k) for k in fields} | {"quota": c.quota(sid)["token_quota"]}

    ops = [
        ("model", lambda c: c.update_session(sid, model="m-2", settings={"temperature": 0.3})),
        ("policy", lambda c: c.update_session(sid, token_quota=5000, checkpoint_interval=1000, idle_timeout=7200)),
        ("more", lambda c: c.update_session(sid, preferences={"p": 1}, user="u1", expires_in=86400)),
        ("checkpoint", lambda c: c.checkpoint(sid)),
        ("fork", lambda c: c.fork(sid, at, new_id="forked", name="a fork")),
        ("end", lambda c: c.end(ended)),
        ("delete", lambda c: c.delete_session(gone)),
    ]
    proofs: list[dict] = []
    for name, op in ops:
        c = a.client()
        answer = op(c)
        if name == "checkpoint":
            assert answer["made"]
            proofs.append({k: v for k, v in answer.items() if k != "made"})
        want = session_state(c, sid)
        want_fork = _state(c, "forked") if name in ("fork", "end", "delete") else None
        a.kill()  # SIGKILL right after the answer
        a.start()
        c = a.client()
        assert session_state(c, sid) == want, name
        assert [p["number"] for p in c.checkpoints(sid)["checkpoints"]] == [p["number"] for p in proofs], name
        for p in proofs:
            assert c.verify_proof(sid, p)["ok"], name
        if want_fork is not None:
            assert _state(c, "forked") == want_fork
            assert want_fork["messages"] == [f"m{i}" for i in range(5)]
        if name in ("end", "delete"):
            assert c.get_session(ended)["status"] == "ended"
        if name == "delete":
            with pytest.raises(ApiError) as err:
                c.get_session(gone)
            assert err.value.status == 404
        cli_json(a.home, "sync", "--wait")
        assert cli_json(a.home, "verify")["ok"], name
        assert run_cli(a.home, "doctor", "--json").returncode == 0, name

    want = session_state(a.client(), sid)

    def converged() -> bool:
        b.client().sync(sid, wait=True, timeout=10)
        got = session_state(b.client(), sid)
        return got == want and b.client().verify_proof(sid, proofs[0])["ok"]

    wait_for(converged, timeout=30, what="the other device has the settings changed before the kills")
    assert cli_json(b.home, "verify")["ok"]
