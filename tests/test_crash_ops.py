"""kill -9 in the middle of operations that write more than one transaction: after the restart nothing
half-done is visible (a session is there whole or not at all), what was acknowledged is there, and verify
and doctor are clean. SESSIOND_CRASH_AT names the point where the daemon dies (os._exit, as under kill -9)."""

from __future__ import annotations

import os

from conftest import cli_json, run_cli, wait_for, write_config
from sessiond.client import ApiError
from sessiond.stores.registry import RegistryEntry
from sessiond.sync.heads import manifest_hash_of


def _clean(d) -> None:
    # A restart leaves the pushes that were due to the daemon's next start (a stop does not wait for them):
    # verify right away could find a session not pushed yet (ok: false, "run `sessiond sync --wait`").
    cli_json(d.home, "sync", "--wait")
    rep = cli_json(d.home, "verify")
    assert rep["ok"], rep
    res = run_cli(d.home, "doctor", "--json")
    assert res.returncode == 0, res.stdout


def _all_messages(c, sid: str) -> list[str]:
    return [m["content"] for m in c.messages(sid, limit=100_000)["messages"]]


def _objects_in(store: str) -> set[str]:
    out = set()
    for _path, _dirs, files in os.walk(os.path.join(store, "objects")):
        out.update(f for f in files if not f.startswith("."))
    return out


def test_a_fork_killed_part_way_is_not_left_half_made(make_daemon, store_dir):
    """A fork writes its session, then the copied history, then the chats' compaction cutoffs: a crash
    between them left a fork with no messages (or no cutoffs), listed and pushed as if whole."""
    for point in ("fork.created", "fork.copied"):
        d = make_daemon(f"file://{store_dir}").start()
        c = d.client()
        sid = c.create_session(name="source")["id"]
        c.append_many(sid, [{"role": "user", "content": f"m{i}", "tokens": 10} for i in range(20)])
        c.compact(sid, target_tokens=50)  # a cutoff the fork must copy (set before the fork's point)
        c.append_many(sid, [{"role": "user", "content": f"m{i}", "tokens": 10} for i in range(20, 25)])
        at = c.messages(sid, limit=100)["messages"][-1]["id"]
        d.env["SESSIOND_CRASH_AT"] = point
        d.restart()
        res = run_cli(d.home, "fork", sid, "--at", at, "--id", "forked", "--json")
        assert res.returncode != 0, res.stdout  # the daemon died answering it: not acknowledged
        d.proc.wait(10)
        d.env.pop("SESSIOND_CRASH_AT")
        d.start()
        c = d.client()
        ids = [s["id"] for s in c.list_sessions()["sessions"]]
        assert "forked" not in ids, (point, ids)  # not half there: absent
        try:
            c.get_session("forked")
            raise AssertionError(f"{point}: a half-made fork is still there")
        except ApiError as exc:
            assert exc.status == 404
        assert _all_messages(c, sid) == [f"m{i}" for i in range(25)]
        _clean(d)
        # the fork asked again is made whole, with the source's cutoff
        new = c.fork(sid, at, new_id="forked")
        assert new["id"] == "forked"
        assert _all_messages(c, "forked") == [f"m{i}" for i in range(25)]
        assert c.context("forked")["compacted_upto"] is not None
        d.stop()


def test_an_end_killed_before_its_final_checkpoint_gets_it_at_the_next_start(make_daemon, store_dir):
    """`end` writes the session's status, then its final checkpoint: a crash between them left an ended
    session without its final proof, and nothing made it later (`end` again: "already ended, nothing to
    do"; the clean-up's expiry only looks at sessions not ended), so a device following it never got one."""
    url = f"file://{store_dir}"
    a, b = make_daemon(url).start(), make_daemon(url).start()
    c = a.client()
    sid = c.create_session(name="to end")["id"]
    c.append_many(sid, [{"role": "user", "content": f"m{i}"} for i in range(30)])
    b.client().import_code(c.share(sid)["code"])
    a.env["SESSIOND_CRASH_AT"] = "end.ended"
    a.restart()
    res = run_cli(a.home, "end", sid, "--json")
    assert res.returncode != 0, res.stdout  # the daemon died answering it
    a.proc.wait(10)
    a.env.pop("SESSIOND_CRASH_AT")
    a.start()
    c = a.client()
    assert c.get_session(sid)["status"] == "ended"  # the end was committed: it stands
    final = [k for k in c.checkpoints(sid)["checkpoints"] if k["messages"] == 30]
    assert final, c.checkpoints(sid)  # and its final checkpoint was made at the start
    assert _all_messages(c, sid) == [f"m{i}" for i in range(30)]
    _clean(a)
    # the follower sees the end and its final proof
    assert c.sync(sid, wait=True, timeout=30)["complete"]

    def followed() -> bool:
        b.client().sync(sid, wait=True, timeout=10)
        got = b.client().checkpoints(sid)["checkpoints"]
        return b.client().get_session(sid)["status"] == "ended" and any(k["messages"] == 30 for k in got)

    wait_for(followed, timeout=30, what="the follower has the end and its final checkpoint")
    # a restart after that makes no second one
    n = len(c.checkpoints(sid)["checkpoints"])
    a.restart()
    assert len(a.client().checkpoints(sid)["checkpoints"]) == n


def test_a_push_killed_after_its_pushed_mark_still_lets_gc_free_the_manifest_it_left(make_daemon, store_dir):
    """A push ended in two transactions once the store held the new head: the pushed mark, then the
    manifest the head left noted in `released` (what `sessiond gc` frees). Killed between the two, the old
    manifest was never noted: nothing pushed again (the mark said done) and gc never freed it, a leak in
    the store with every push a crash cut there. The mark and the note are one transaction now."""
    d = make_daemon(f"file://{store_dir}")
    write_config(d.home, push_delay=3600)  # only an asked sync pushes: the crash comes at the one asked for
    d.start()
    c = d.client()
    sid = c.create_session(name="pushed")["id"]
    c.append(sid, "user", "first")
    c.sync(sid, wait=True)  # revision 1 (no manifest before it)
    (head,) = [n for n in os.listdir(os.path.join(store_dir, "heads")) if not n.startswith(".")]  # the log's
    with open(os.path.join(store_dir, "heads", head), "rb") as f:
        manifest = manifest_hash_of(RegistryEntry.from_bytes(f.read())).hex()  # revision 1's
    assert manifest in _objects_in(store_dir)
    c.append(sid, "user", "second")
    d.env["SESSIOND_CRASH_AT"] = "push:pushed"
    d.restart()
    res = run_cli(d.home, "sync", sid, "--wait", "--json")
    assert res.returncode != 0, res.stdout  # the daemon died ending the push
    assert d.proc.wait(10) == 137  # at the crash point, after the store took revision 2
    d.env.pop("SESSIOND_CRASH_AT")
    d.start()
    c = d.client()
    c.sync(sid, wait=True)
    done = cli_json(d.home, "gc", "--grace", "0")
    assert manifest not in _objects_in(store_dir), done  # let go by revision 2's head, freed
    assert c.verify(sid)["ok"]
    assert _all_messages(c, sid) == ["first", "second"]
    _clean(d)


def test_a_compaction_killed_after_its_revision_still_lets_gc_free_the_pages_it_merged(make_daemon, store_dir):
    """A push that folds level 0 (its 16th page) publishes a second revision, whose pages merged away
    were noted in `released` only after that revision's end was written: killed between the two, they
    were never noted, and gc never freed them. They are noted in the revision's end now."""
    d = make_daemon(f"file://{store_dir}")
    write_config(d.home, push_delay=3600)  # only an asked sync pushes
    d.start()
    c = d.client()
    sid = c.create_session(name="compacted")["id"]
    c.sync(sid, wait=True)  # the session's creation: level 0's first page
    for i in range(14):  # 14 more, one a push
        c.append_many(sid, [{"role": "user", "content": f"m{i}.{j}"} for j in range(20)])
        c.sync(sid, wait=True)
    pages = _objects_in(store_dir)
    c.append_many(sid, [{"role": "user", "content": f"m14.{j}"} for j in range(20)])  # the 16th: folded
    d.env["SESSIOND_CRASH_AT"] = "push:compacted"
    d.restart()
    res = run_cli(d.home, "sync", sid, "--wait", "--json")
    assert res.returncode != 0, res.stdout  # the daemon died after the compaction's revision
    assert d.proc.wait(10) == 137
    d.env.pop("SESSIOND_CRASH_AT")
    d.start()
    c = d.client()
    c.sync(sid, wait=True)
    done = cli_json(d.home, "gc", "--grace", "0")
    left = pages & _objects_in(store_dir)
    # what is left of the 15 pushes before: no page (all merged away) and no manifest (each let go by the next head)
    assert not left, (done, len(left))
    assert c.verify(sid)["ok"]
    assert _all_messages(c, sid) == [f"m{i}.{j}" for i in range(15) for j in range(20)]
    _clean(d)


def test_a_recorded_revision_read_back_keeps_the_pages_it_merged_away():
    """The revision recorded before its upload (sync_state.pending) is what a push resumed after a crash
    publishes: the pages its compaction merged away are read back with it, to be noted for gc then."""
    from sessiond.sync import dagcbor
    from sessiond.sync.revision import Revision as _Revision

    plain, tree = dagcbor.encode({"prev": None}), dagcbor.encode([[]])
    merged = [bytes([i]) * 32 for i in range(3)]
    for m in (merged, []):
        made = _Revision(7, plain, 40, tree, None, merged=m)
        assert made.pending() == dagcbor.encode({"m": plain, "r": 7, "s": 40, "t": [[]], **({"u": m} if m else {})})
        back = _Revision.recorded(made.pending())
        assert (back.rev, back.plain, back.seq, back.tree, back.prev, back.merged) == (7, plain, 40, tree, None, m)


def test_a_gc_killed_after_freeing_before_forgetting_is_finished_by_the_next_gc(make_daemon, store_dir):
    """`gc` frees the objects in the store, then forgets them as candidates (`released`): killed between the
    two, the candidates stay though their objects are gone. The next gc finds them gone (a store's `gone`
    names what it no longer holds, freed now or before) and forgets them: none is kept for ever, and
    the session and a follower of it read on."""
    url = f"file://{store_dir}"
    a, b = make_daemon(url), make_daemon(url).start()
    write_config(a.home, push_delay=3600)  # only an asked sync pushes
    a.start()
    c = a.client()
    sid = c.create_session(name="collected")["id"]
    c.append(sid, "user", "first")
    b.client().import_code(c.share(sid)["code"])
    for text in ("second", "third"):  # each push lets the manifest before it go
        c.append(sid, "user", text)
        c.sync(sid, wait=True)
    assert cli_json(a.home, "gc", "--grace", "0", "--dry-run")["objects"] >= 2
    before = _objects_in(store_dir)
    a.env["SESSIOND_CRASH_AT"] = "gc:freed"
    a.restart()
    res = run_cli(a.home, "gc", "--grace", "0", "--json")
    assert res.returncode != 0, res.stdout  # the daemon died between the store's delete and the forget
    assert a.proc.wait(10) == 137
    assert len(_objects_in(store_dir)) < len(before)  # the store did free them
    a.env.pop("SESSIOND_CRASH_AT")
    a.start()
    again = cli_json(a.home, "gc", "--grace", "0")
    assert again["kept"] == 0, again  # the candidates whose objects went are forgotten, not kept
    assert cli_json(a.home, "gc", "--grace", "0", "--dry-run")["objects"] == 0  # nothing waits any more
    assert _all_messages(a.client(), sid) == ["first", "second", "third"]
    _clean(a)
    a.client().append(sid, "user", "fourth")
    a.client().sync(sid, wait=True)

    def followed() -> bool:
        b.client().sync(sid, wait=True, timeout=10)
        return _all_messages(b.client(), sid) == ["first", "second", "third", "fourth"]

    wait_for(followed, timeout=30, what="the follower reads the session after the gc")
    assert cli_json(b.home, "verify")["ok"]
