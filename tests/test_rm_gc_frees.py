"""`rm` of a session pushed but never shared, then `gc`, left in the store every object its head named (its
last manifest, its pages and nodes): only what its log had let go before was ever a candidate, and nothing
read the deleted session's head again. No other device ever held its key (no code was made, it was not
imported), so nothing can read them: the delete now notes them as candidates in its own transaction, and gc
frees them after its grace (still only if no current head of a session here names them). A shared session
keeps them: importing its code again brings all of it back (README, `sessiond rm`)."""

from __future__ import annotations

import os

from conftest import cli_json, write_config


def _objects_in(store: str) -> set[str]:
    out = set()
    for _path, _dirs, files in os.walk(os.path.join(store, "objects")):
        out.update(f for f in files if not f.startswith("."))
    return out


def _started(make_daemon, store_dir: str) -> tuple:
    """A daemon on the folder store that pushes only when asked, started, and its client."""
    d = make_daemon(f"file://{store_dir}")
    write_config(d.home, push_delay=3600)
    d.start()
    return d, d.client()


def _pushed(c, sid: str, pushes: int) -> None:
    """`pushes` pushes of 20 messages each (from 16 pages on, compaction folds them)."""
    for i in range(pushes):
        c.append_many(sid, [{"role": "user", "content": f"m{i}.{j}"} for j in range(20)])
        assert c.sync(sid, wait=True)["complete"]


def test_rm_of_a_session_never_shared_lets_gc_free_all_it_put(make_daemon, store_dir):
    d, c = _started(make_daemon, store_dir)
    other = c.create_session(name="other")["id"]
    _pushed(c, other, 2)
    cli_json(d.home, "gc", "--grace", "0")
    others = _objects_in(store_dir)
    sid = c.create_session(name="gone")["id"]
    _pushed(c, sid, 20)  # compaction runs: pages merged away, nodes
    assert cli_json(d.home, "gc", "--grace", "0")["objects"] > 0  # what its log let go
    assert _objects_in(store_dir) - others  # what its head names

    assert cli_json(d.home, "rm", sid) == {"deleted": sid}
    done = cli_json(d.home, "gc", "--grace", "0")
    assert _objects_in(store_dir) == others, done  # nothing of it left, the other session's all there
    assert c.verify(other)["ok"]
    assert len(c.messages(other, limit=1000)["messages"]) == 40
    assert cli_json(d.home, "gc", "--grace", "0")["objects"] == 0
    d.stop()


def test_rm_of_a_shared_session_keeps_what_its_head_names(make_daemon, store_dir):
    d, c = _started(make_daemon, store_dir)
    sid = c.create_session(name="shared")["id"]
    _pushed(c, sid, 3)
    code = c.share(sid)["code"]
    cli_json(d.home, "gc", "--grace", "0")
    named = _objects_in(store_dir)
    assert cli_json(d.home, "rm", sid) == {"deleted": sid}
    cli_json(d.home, "gc", "--grace", "0")
    assert _objects_in(store_dir) == named  # a device importing its code reads them
    c.import_code(code)
    assert len(c.messages(sid, limit=1000)["messages"]) == 60
    d.stop()


def test_rm_with_the_store_away_lets_go_the_pages_it_recorded(make_daemon, store_dir, tmp_path):
    """The store failing the delete's read of its head: the pages of the level tree this device recorded are
    let go all the same (its manifest, which only the head names, stays)."""
    d, c = _started(make_daemon, store_dir)
    sid = c.create_session(name="gone")["id"]
    _pushed(c, sid, 3)
    cli_json(d.home, "gc", "--grace", "0")
    named = _objects_in(store_dir)
    away = str(tmp_path / "away")
    os.rename(store_dir, away)  # the share unmounted
    out = cli_json(d.home, "rm", sid)  # what stays is named (left_in_store), with its way on
    assert out["deleted"] == sid and "last manifest" in out["left_in_store"]["what"], out
    os.rename(away, store_dir)
    done = cli_json(d.home, "gc", "--grace", "0")
    assert len(_objects_in(store_dir)) == 1 and done["objects"] == len(named) - 1, done
    d.stop()
