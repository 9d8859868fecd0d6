"""`rm` of a session never shared but pushed: what it lets go in the store (sync/unshared.py) with the store hung,
and with a push of it killed before its head was written. The delete read the store's head within one whole
store timeout (30 s by default) while `rm` waited; and a push killed after it put its pages and manifest, before
its head, left them named by no head the delete could read, so never noted for gc, in the store for good."""

from __future__ import annotations

import asyncio
import json
import os
import time

from conftest import DaemonProc, cli_json, run_cli, write_config
from servers.s5portal import Portal, Threaded, make_app


def _objects_in(store: str) -> set[str]:
    out = set()
    for _path, _dirs, files in os.walk(os.path.join(store, "objects")):
        out.update(f for f in files if not f.startswith("."))
    return out


def test_rm_answers_promptly_while_the_store_hangs(tmp_path):
    p = Portal()
    server = Threaded(make_app(p)).start()
    p.authority = f"127.0.0.1:{server.port}"
    d = DaemonProc(str(tmp_path / "home"), f"s5+http://{p.authority}")
    write_config(d.home, store_timeout=20, push_delay=3600)
    d.start()
    try:
        with d.client() as c:
            sid = c.create_session(name="gone", initial_messages=[{"role": "user", "content": "hi"}])["id"]
            assert c.sync(sid, wait=True, timeout=20)["complete"]
        p.faults.hang = asyncio.Event()
        t0 = time.monotonic()
        res = run_cli(d.home, "rm", sid, "--json")
        took = time.monotonic() - t0
        assert res.returncode == 0, res.stderr
        assert took < 8, took  # main: the store timeout, 20 s
        # what the delete could not let go (its head unread: its last manifest and the parts objects its nodes
        # name) was said in the daemon's log alone; the answer names it, the store and what to do
        left = json.loads(res.stdout)["left_in_store"]
        assert left["store"] == f"s5+http://{p.authority}" and "last manifest" in left["what"], left
        assert "within 3 s" in left["why"] and "sessiond gc" in left["fix"], left
        with d.client() as c2:
            sid2 = c2.create_session(name="gone too", initial_messages=[{"role": "user", "content": "hi"}])["id"]
        server.loop.call_soon_threadsafe(p.faults.hang.set)
        p.faults.hang = None
        with d.client() as c2:
            assert c2.sync(sid2, wait=True, timeout=20)["complete"]
        p.faults.hang = asyncio.Event()
        shown = run_cli(d.home, "rm", sid2)
        assert shown.returncode == 0 and f"deleted {sid2}" in shown.stdout, shown
        assert "left in the store" in shown.stdout and "sessiond gc" in shown.stdout, shown.stdout
    finally:
        if p.faults.hang is not None:
            server.loop.call_soon_threadsafe(p.faults.hang.set)
        d.stop()
        server.stop()


def test_a_push_killed_before_its_head_leaves_nothing_after_rm_and_gc(make_daemon, store_dir, tmp_path):
    """Killed with its pages and manifest put, its head not written; the store away at the next start (no push of
    it resumed) and at the `rm`: what the killed push put is let go all the same, and the manifest its head named
    (the killed revision's `prev`)."""
    d = make_daemon(f"file://{store_dir}")
    write_config(d.home, push_delay=3600)
    d.start()
    c = d.client()
    heads = os.path.join(store_dir, "heads")
    others = set(os.listdir(heads))
    sid = c.create_session(name="gone", initial_messages=[{"role": "user", "content": "hello"}])["id"]
    assert c.sync(sid, wait=True)["complete"]
    new = {n for n in os.listdir(heads) if not n.startswith(".")} - others
    assert len(new) == 1, sorted(new)
    (head,) = new
    before = _objects_in(store_dir)
    d.stop()
    d.env["SESSIOND_CRASH_AT"] = f"write:{head}"  # the next push: its pages and manifest put, its head not
    d.start()
    d.client().append_many(sid, [{"role": "user", "content": f"m{i}"} for i in range(30)])
    run_cli(d.home, "sync", sid, "--wait", "--json")
    assert d.proc.wait(20) == 137
    assert len(_objects_in(store_dir) - before) >= 2  # (its pages and its manifest, named by no head)
    d.env.pop("SESSIOND_CRASH_AT")
    away = str(tmp_path / "away")
    os.rename(store_dir, away)  # the share unmounted
    d.start()
    out = cli_json(d.home, "rm", sid, "--force")
    assert out["deleted"] == sid and "sessiond gc" in out["left_in_store"]["fix"], out  # (the store away: said)
    os.rename(away, store_dir)
    done = cli_json(d.home, "gc", "--grace", "0")
    assert _objects_in(store_dir) == set(), done
    d.stop()
