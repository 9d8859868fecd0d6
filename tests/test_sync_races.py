"""Races and crashes between devices of one shared session that lost or hid what a writer wrote: each shown
with real daemons over one file:// store, the order of the devices' steps held by pause points
(storage/testhooks.py) where it matters."""

from __future__ import annotations

import concurrent.futures
import os
import tempfile

from conftest import wait_for
from test_rekey_forgery import _device, _messages, _three_writers


def test_gc_on_a_writer_let_back_in_keeps_the_log_a_rekey_froze_of_it(make_daemon, store_dir):
    """A writer dropped by a rekey and let back in with a new code pushes its log again under the new key:
    the manifest the rekey froze (pinned in the new members slot's frozen logs) is one its head left, a gc
    candidate of its own. Its gc read every current head and not the frozen logs, and freed it: every
    later import of the session failed on the frozen log (the log damaged), and what the writer wrote
    before the drop was out of reach."""
    r, k, d, sid = _three_writers(make_daemon, store_dir)
    d.client().append(sid, "assistant", "D before the drop")
    d.client().sync(sid, wait=True, timeout=10)
    r.client().rekey(sid, drop=[_device(d)])
    d.client().sync(sid, wait=True, timeout=10)
    assert d.client().get_session(sid)["access"] == "revoked"
    d.client().import_code(r.client().share(sid, write=True)["code"])
    d.client().append(sid, "assistant", "D let back in")
    d.client().sync(sid, wait=True, timeout=10)
    wait_for(lambda: r.client().sync(sid, wait=True, timeout=10) and "D let back in" in _messages(r, sid), timeout=30)
    d.client().gc(grace=0)
    n = make_daemon("file://" + store_dir).start()
    n.client().import_code(r.client().share(sid)["code"])
    assert "D before the drop" in _messages(n, sid)
    assert _messages(n, sid) == _messages(r, sid)


def _held(d, point: str):
    """Restart daemon `d` to hold at pause point `point`; the flag file that holds it (removed: let go)."""
    d.stop()
    flag = os.path.join(tempfile.mkdtemp(prefix="sd-flag-"), point)
    d.env["SESSIOND_TEST_PAUSE"] = f"{point}:{flag}"
    d.start()
    return flag


def test_a_kept_writer_that_pulled_the_dropped_writer_while_the_rekey_froze_it_holds_what_every_device_holds(
    make_daemon, store_dir
):
    """R froze D's log, then published its notice (its claim pushed in between); K pulled meanwhile, the slot
    holding no notice yet, and took from D's head what D wrote after the freeze. K then took the notice: it
    kept those messages, which no other device got (nor any import later: the new generation reads D's log as
    frozen), so K's conversation was not the others'."""
    r, k, d, sid = _three_writers(make_daemon, store_dir)
    flag = _held(r, "rekey.notice_put")
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        rekeyed = pool.submit(r.client().rekey, sid, drop=[_device(d)])
        wait_for(lambda: os.path.exists(flag), timeout=20)  # D frozen, the notice not published
        d.client().append(sid, "assistant", "D while R rekeys")
        d.client().sync(sid, wait=True, timeout=10)
        wait_for(
            lambda: k.client().sync(sid, wait=True, timeout=10) and "D while R rekeys" in _messages(k, sid), timeout=30
        )
        os.remove(flag)
        assert rekeyed.result(timeout=30)["dropped"] == [_device(d)]
    r.client().append(sid, "user", "after the rekey")
    r.client().sync(sid, wait=True, timeout=10)
    wait_for(lambda: k.client().sync(sid, wait=True, timeout=10) and "after the rekey" in _messages(k, sid), timeout=30)
    n = make_daemon("file://" + store_dir).start()
    n.client().import_code(r.client().share(sid)["code"])
    r.client().sync(sid, wait=True, timeout=10)
    assert _messages(k, sid) == _messages(r, sid) == _messages(n, sid)
