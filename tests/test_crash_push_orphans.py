"""kill -9 between a push's pages and its revision's record, with appends before the retry: the retry cuts a
different last page, and the killed attempt's last page stayed in the store, referenced by no head and never
noted for gc (a leak per such crash). A push notes what it is about to put as gc candidates before the
upload, and forgets them in the transaction that records the revision naming them: what a killed attempt put
and no revision names is freed by the next gc."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator

import pytest

from conftest import cli_json, flag_dir, relay_served, run_cli, wait_for, write_config
from test_crash_ops import _all_messages, _clean, _objects_in


def _after_gc(make_daemon, url: str, held: Callable[[], set[str]], *, crash: bool, n: int) -> tuple[set[str], dict]:
    """first pushed; `n` more, then (killed pushing them, if `crash`) third; pushed; gc: the store's objects."""
    d = make_daemon(url)
    write_config(d.home, push_delay=3600)  # only an asked sync pushes (and the start's resumed one)
    d.start()
    c = d.client()
    # (no automatic checkpoint: one made while a push is asked for would cut the two runs' pushes differently)
    sid = c.create_session(name="pushed", checkpoint_interval=10**9)["id"]
    c.append(sid, "user", "first")
    c.sync(sid, wait=True)
    second = [f"second {i} " + "words " * 50 for i in range(n)]
    c.append_many(sid, [{"role": "user", "content": m} for m in second])
    if crash:
        d.env["SESSIOND_CRASH_AT"] = "push:put"
        d.restart()
        res = run_cli(d.home, "sync", sid, "--wait", "--json")
        assert res.returncode != 0, res.stdout  # the daemon died with the pages put, the revision not recorded
        assert d.proc.wait(10) == 137
        d.env.pop("SESSIOND_CRASH_AT")
        flag = os.path.join(flag_dir(), "push")
        d.env["SESSIOND_TEST_PAUSE"] = f"push.begin:{flag}"
        d.start()  # the push resumed at the start: held until the next append is in
        c = d.client()
        wait_for(lambda: os.path.exists(flag), timeout=20, what="the resumed push held")
        c.append(sid, "user", "third")
        os.unlink(flag)
        assert c.sync(sid, wait=True, timeout=30)["complete"]
        d.env.pop("SESSIOND_TEST_PAUSE")
        d.restart()
        c = d.client()
    else:
        c.append(sid, "user", "third")
    c.sync(sid, wait=True)
    done = cli_json(d.home, "gc", "--grace", "0")
    assert _all_messages(c, sid) == ["first", *second, "third"]
    assert c.verify(sid)["ok"]
    _clean(d)
    objects = held()
    d.stop()
    return objects, done


@contextlib.contextmanager
def _store(kind: str) -> Iterator[tuple[str, Callable[[], set[str]]]]:
    """A store of `kind`: (its URL, what it holds: its objects; on a Kubo node, those pinned)."""
    folder = tempfile.mkdtemp(prefix="sd-store-")
    try:
        if kind == "folder":
            yield f"file://{folder}", lambda: _objects_in(folder)
        elif kind == "relay":  # an S5 portal of its own: gc deletes this account's objects there
            with relay_served(folder, "--open-registration") as info:
                yield info["url"], lambda: _objects_in(folder)
        else:  # a Kubo node: gc unpins (pin/rm), the node's own garbage collection drops the bytes
            from servers.kubo import Node, make_rpc_app
            from servers.s5portal import Threaded

            node = Node()
            rpc = Threaded(make_rpc_app(node)).start()
            try:
                yield f"ipfs+http://127.0.0.1:{rpc.port}", lambda: {h.hex() for h in node.pins}
            finally:
                rpc.stop()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.parametrize("kind", ["folder", "relay", "kubo"])
@pytest.mark.parametrize("n", [1, 1500])  # a short run (pages put on the loop), a long one (by worker threads)
def test_a_push_killed_between_its_pages_and_its_revision_leaves_nothing_after_gc(make_daemon, n, kind):
    with _store(kind) as (url, held):
        crashed, done = _after_gc(make_daemon, url, held, crash=True, n=n)
    with _store(kind) as (url, held):
        clean, _ = _after_gc(make_daemon, url, held, crash=False, n=n)
    assert len(crashed) == len(clean), (len(crashed), len(clean), done)
