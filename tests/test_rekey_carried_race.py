"""Two kept writers each write how far they carried a dropped writer's log past the notice to the old members slot
(docs/FORMATS.md §6, "Carried past the notice"): the second keeps the first's entries, whatever a read of the new
slot meanwhile puts in this process's memory of the session's slot. Real daemons over one file:// store."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os

from conftest import wait_for, write_config
from sessiond.sync.keys import KeyStore
from test_rekey_carried import _old_slot
from test_rekey_forgery import _messages
from test_sync_races import _held, _rekey_held_doing, _written_and_pulled


def _four_writers(make_daemon, store_dir):
    """Writers R, K1, K2 and D of one session; all but R pull only when asked."""
    url = "file://" + store_dir
    r, k1, k2, d = (make_daemon(url) for _ in range(4))
    for k in (k1, k2, d):
        write_config(k.home, poll_interval=3600, sync_interval=3600)
    for dev in (r, k1, k2, d):
        dev.start()
    sid = r.client().create_session(name="kept secret")["id"]
    r.client().append(sid, "user", "before the rekey")
    code = r.client().share(sid, write=True)["code"]
    for dev in (k1, k2, d):
        dev.client().import_code(code)
        dev.client().append(sid, "assistant", "joins")  # a push makes it a member (a writer)
        dev.client().sync(wait=True)
    for dev in (r, k1, k2, d):
        _pulled(dev, sid, "joins", 3)
    return r, k1, k2, d, sid


def _pulled(dev, sid: str, text: str, times: int = 1) -> None:
    """Device `dev` pulls `sid` until it holds `times` messages `text`."""
    wait_for(
        lambda: dev.client().sync(sid, wait=True, timeout=10) and _messages(dev, sid).count(text) >= times, timeout=30
    )


def _signers(store_dir: str, d, sid: str) -> set[bytes]:
    """The signers of the entries of the old members slot's "c" (read with dropped writer D's old keys)."""
    return {bytes(e["p"]) for e in asyncio.run(_old_slot(store_dir, d.home, sid))[2].get("c", [])}


def test_a_kept_writer_keeps_the_other_kept_writers_entries_whatever_a_read_of_the_new_slot_does_meanwhile(
    make_daemon, store_dir
):
    """R's rekey drops D; while its notice is not out, D writes "D1", which K1 and K2 pull, then "D2", which K2
    alone pulls. K2 takes the notice and writes its entry (D carried up to D2) to the old slot; K1 then takes it
    and, the old slot read, a `verify` reads the new slot meanwhile. K1 took the entries to keep from this
    process's memory of the session's slot, which the verify had replaced with the new slot's (no "c"): it wrote
    its own entry alone, K2's dropped, and D counted "D2" as held here only, though K2 and every device of the new
    generation hold it."""
    r, k1, k2, d, sid = _four_writers(make_daemon, store_dir)

    def meanwhile() -> None:  # D's log frozen, the notice not out
        _written_and_pulled(d, sid, "D1", k1, k2)
        _written_and_pulled(d, sid, "D2", k2)

    _rekey_held_doing(r, d, sid, "rekey.notice_put", meanwhile)
    k1_pk, k2_pk = (KeyStore(os.path.join(k.home, "keys")).head_pk(sid) for k in (k1, k2))
    k2.client().sync(sid, wait=True, timeout=10)  # K2 takes the notice: its entry in the old slot
    assert _signers(store_dir, d, sid) == {k2_pk}
    flag = _held(k1, "rekey.carried_read")
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        synced = pool.submit(k1.client().sync, sid, wait=True, timeout=30)
        wait_for(lambda: os.path.exists(flag), timeout=20)  # K1 switched, the old slot read, its entry not written
        k1.client().verify(sid)  # reads the new members slot
        os.remove(flag)
        synced.result(timeout=30)
    assert _signers(store_dir, d, sid) == {k1_pk, k2_pk}
    said = d.client().sync(sid, wait=True, timeout=10)["sessions"][sid]
    assert "rekeyed without this device" in said["pull_error"] and "held here" not in said["pull_error"], said
    got = d.client().get_session(sid)
    assert got["access"] == "revoked" and "held_here" not in got, got.get("held_here")
