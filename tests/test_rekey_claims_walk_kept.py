"""A pull's walk down an author's older manifests (sync/rekeywalk.py) is bounded to WALK_SECONDS, and one cut short
goes on at the next pull. Where it stopped was kept in memory only: a restart walked again from the author's head, on
a slow store with many manifests minutes of slices at every start. It is kept in the database now (table
`claims_walks`, storage/claimswalks.py): a restart goes on where the walk stopped, and the row goes once the walk is
done, or with its session."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import types

import pytest

from devices import count_gets
from sessiond.storage.database import Database
from sessiond.stores import FileStore
from sessiond.sync import rekeywalk
from sessiond.sync.engine import Syncer
from sessiond.sync.errors import ImportError_
from sessiond.sync.fetch import walk_manifests
from sessiond.sync.manifest import CLAIMS_KEPT
from test_rekey_claims_walk import AUTHOR_QUIET, _aged_out, _slot_served_with


async def _walks(db: Database) -> list[tuple]:
    return await db.c.committed.fetchall("SELECT session_id, walk FROM claims_walks")


def _forget_the_process() -> None:
    """What a restart loses: the walks kept in this process's memory."""
    for kept in (rekeywalk._CUT, rekeywalk._WALKED, rekeywalk._SHORT):
        for k in kept.held():
            kept.pop(k)


async def _pulled(b, sid: str) -> None:
    with contextlib.suppress(ImportError_):
        await b.pull(sid)


async def _reopened_b(devices) -> Syncer:
    """B stopped and its database closed, the process's memory of walks gone, and B opened again on the same files."""
    await devices.b.stop()
    await devices.dbb.close()
    devices.syncers.remove(devices.b)
    devices.dbs.remove(devices.dbb)
    _forget_the_process()
    devices.dbb, devices.b = await devices._device("b", None, {})
    await devices.b.start()
    return devices.b


async def test_a_walk_cut_short_goes_on_after_a_restart_where_it_stopped(devices, monkeypatch):
    monkeypatch.setattr(rekeywalk, "WALK_SECONDS", 0.0)  # (one manifest a pull past the head's)
    out = 30
    _a, b, sid, notice, new_key, _claims = await _aged_out(devices, "walk kept", CLAIMS_KEPT + out)
    await _slot_served_with(devices, sid, notice)
    before = 20
    for _ in range(before):
        await _pulled(b, sid)
    assert b.ctx.keys.session_key(sid) != new_key
    assert len(await _walks(devices.dbb)) == 1  # (kept: where it stopped)
    b = await _reopened_b(devices)
    gets = count_gets(await b.ctx.store_for(sid))
    after = 0
    while b.ctx.keys.session_key(sid) != new_key and after < 2 * (out + CLAIMS_KEPT):
        await _pulled(b, sid)
        after += 1
    assert b.ctx.keys.session_key(sid) == new_key
    # main: walked again from A's head, as many pulls as before the restart and more
    assert after <= out + CLAIMS_KEPT - before + 4, (after, len(gets))
    assert await _walks(devices.dbb) == []  # (done: dropped)


async def test_a_walk_kept_goes_with_its_session(devices, monkeypatch):
    monkeypatch.setattr(rekeywalk, "WALK_SECONDS", 0.0)
    _a, b, sid, notice, _new_key, _claims = await _aged_out(devices, "walk removed", CLAIMS_KEPT + 4)
    await _slot_served_with(devices, sid, notice)
    await _pulled(b, sid)
    assert len(await _walks(devices.dbb)) == 1
    await devices.dbb.delete_session(sid)
    assert await _walks(devices.dbb) == []


async def test_a_real_daemon_restarted_goes_on_with_the_walk(devices, make_daemon, monkeypatch):
    """B a real daemon: its walk cut short (here, in this process, before it starts), the manifests the walk read
    then freed from the store; a walk from the author's head again ends at the first one gone and refuses the notice
    for good; the daemon started goes on where the walk stopped, and takes it."""
    monkeypatch.setattr(rekeywalk, "WALK_SECONDS", 0.0)
    proc = make_daemon("file://" + devices.store_path)
    os.makedirs(proc.home, mode=0o700)
    a, _b = await devices.open(a=AUTHOR_QUIET)  # (A pulls only when asked: test_rekey_claims_walk.py)
    await devices.b.stop()
    await devices.dbb.close()
    devices.syncers.remove(devices.b)
    devices.dbs.remove(devices.dbb)
    devices.dbb = await Database.open(os.path.join(proc.home, "sessions.db"))
    devices.b = Syncer(devices.dbb, FileStore(devices.store_path), os.path.join(proc.home, "keys"), timeout=10)
    devices.dbs.append(devices.dbb)
    devices.syncers.append(devices.b)
    monkeypatch.setattr(devices, "open", _opened_already(a, devices.b))
    _a, b, sid, notice, _new_key, _claims = await _aged_out(devices, "walk in a daemon", CLAIMS_KEPT + 12)
    await _slot_served_with(devices, sid, notice)
    read = 6
    for _ in range(read):
        await _pulled(b, sid)
    assert len(await _walks(devices.dbb)) == 1
    # the manifests read so far but A's head's, gone from the store: only a walk that goes on gets past them
    store = FileStore(devices.store_path)
    chain = [
        mhash
        async for _at, mhash, _k, _m in walk_manifests(
            store, sid, a.ctx.keys.session_keys(sid), a.ctx.keys.head_pk(sid), "a", timeout=10, limit=read
        )
    ]
    await a.stop()  # (A's pushes meanwhile would move its head: a new one read down to where the walk began, gone)
    await b.stop()
    await devices.dbb.close()
    devices.syncers.remove(b)
    devices.dbs.remove(devices.dbb)
    await store.free(chain[1:])
    _forget_the_process()
    proc.start()
    try:
        for _ in range(5):
            with contextlib.suppress(Exception):
                proc.client().sync(sid, wait=True, timeout=20)
    finally:
        assert proc.stop() == 0
    db = await Database.open(os.path.join(proc.home, "sessions.db"))
    try:
        remote = await db.remote(sid)
        # main: walked again from A's head, the notice refused at the first manifest gone
        assert bytes(remote["announce_pk"]) == notice["a"]
        assert await _walks(db) == []
    finally:
        await db.close()


def _opened_already(a, b):
    async def opened(**_kw):
        return a, b

    return opened


@pytest.mark.parametrize("walk", ["cut_short", "at_once"])
async def test_a_walk_done_and_cut_off_before_the_notice_is_taken_is_not_walked_again_from_the_head(
    devices, monkeypatch, walk
):
    """B's walk, cut short across pulls (`cut_short`), ends: A's older manifest claims the notice. Its row was dropped
    there, before the notice was taken (the rest of the check, the key's switch): a kill -9 in between (here: the
    check's next step failing, then a restart) lost what the walk found. Walked again from A's head, past manifests
    A's gc has freed since (the walk took long: the case its kept row is for), it ends at the first one gone and
    refuses the notice for good. What the walk found is kept until the notice is settled: the restart takes it.
    `at_once`: the walk is never cut short, it ends in the pull that began it (a fast store, few manifests): what it
    found was kept in the process's memory only (a row was kept only for a walk once cut short), lost the same way."""
    if walk == "cut_short":
        monkeypatch.setattr(rekeywalk, "WALK_SECONDS", 0.0)  # (one manifest a pull past the head's)
    out = 8 if walk == "cut_short" else 2
    a, b, sid, notice, new_key, _claims = await _aged_out(devices, "walk done", CLAIMS_KEPT + out)
    await _slot_served_with(devices, sid, notice)
    found = await found_then_cut_off(devices, monkeypatch, sid, 2 * (out + CLAIMS_KEPT))
    assert b.ctx.keys.session_key(sid) != new_key
    if walk == "at_once":
        assert found == [True], found  # (one pull: never cut short)
    store = FileStore(devices.store_path)
    chain = await authors_chain(store, a, sid, 3)
    await a.stop()  # (its head stays)
    b = await _reopened_b(devices)
    await store.free(chain[1:])  # (freed by A's gc since: well above the manifest that claims it)
    for _ in range(2 * (out + CLAIMS_KEPT)):  # (a walk from the head: one manifest a pull)
        if b.ctx.keys.session_key(sid) == new_key:
            break
        await _pulled(b, sid)
    # main: walked again from A's head, ended at the first manifest gone: refused, for good
    assert b.ctx.keys.session_key(sid) == new_key
    assert await _walks(devices.dbb) == []  # (settled with the switch: dropped)


async def found_then_cut_off(devices, monkeypatch, sid: str, pulls: int) -> list[bool | None]:
    """B pulls `sid` (`pulls` times at most) until its walk finds A's claim, and the check is cut off right there
    (a kill -9 before the notice is taken: here, the check's next step failing); what each walk answered."""
    from sessiond.sync import rekeyproof

    real = rekeyproof.claimed_before
    found: list[bool | None] = []

    async def cut_off_once_found(*args, **kw):
        res = await real(*args, **kw)
        found.append(res)
        if res and found.count(True) == 1:
            raise ImportError_("store", "(killed here: the walk ended, the notice not taken)")
        return res

    monkeypatch.setattr(rekeyproof, "claimed_before", cut_off_once_found)
    try:
        for _ in range(pulls):
            if True in found:
                break
            await _pulled(devices.b, sid)
    finally:
        monkeypatch.setattr(rekeyproof, "claimed_before", real)
    assert True in found, found
    return found


async def authors_chain(store, a, sid: str, limit: int) -> list[bytes]:
    """The hashes of A's manifests of `sid` from its head down, `limit` at most."""
    keys, pk = a.ctx.keys.session_keys(sid), a.ctx.keys.head_pk(sid)
    return [mhash async for _at, mhash, _k, _m in walk_manifests(store, sid, keys, pk, "a", timeout=10, limit=limit)]


async def test_a_kill_between_the_keys_rotating_and_the_rows_going_loses_no_walk(devices, monkeypatch):
    """The walk's rows go in the switch's transaction (SyncState.switch_slot), after the key files rotate
    (KeySwitch._switch_key): a kill between the two (here: the switch's next step failing, then a restart) leaves the
    keys on the new generation and the slot, the peers and the walk's row on the old. The notice was checked before
    the rekey's record was kept (Rekeyer.take: keys.set_rekey_pending), and the restart's pull finishes the switch
    from that record, checking nothing again: no walk, from A's head past manifests A's gc freed since or from its
    row; the row goes with the switch. (Such a kill costs nothing: a kill before the record leaves the row, which the
    next check meets: test_a_walk_done_and_cut_off_before_the_notice_is_taken_is_not_walked_again_from_the_head.)"""
    monkeypatch.setattr(rekeywalk, "WALK_SECONDS", 0.0)
    out = 8
    a, b, sid, notice, new_key, _claims = await _aged_out(devices, "killed in the switch", CLAIMS_KEPT + out)
    await _slot_served_with(devices, sid, notice)
    db = devices.dbb
    real_keep, real_switch = db.keep_peers, db.syncstate.switch_slot

    async def killed(*_args, **_kw):
        raise ImportError_("store", "(killed here: the keys rotated, the slot not switched)")

    monkeypatch.setattr(db, "keep_peers", killed)
    monkeypatch.setattr(db.syncstate, "switch_slot", killed)
    try:
        for _ in range(2 * (out + CLAIMS_KEPT)):
            if b.ctx.keys.session_key(sid) == new_key:
                break
            await _pulled(b, sid)
    finally:
        monkeypatch.setattr(db, "keep_peers", real_keep)
        monkeypatch.setattr(db.syncstate, "switch_slot", real_switch)
    assert b.ctx.keys.session_key(sid) == new_key  # (rotated: the files)
    assert bytes((await db.remote(sid))["announce_pk"]) != notice["a"]  # (not switched: the database)
    assert len(await _walks(db)) == 1  # (the walk that found the claim, kept)
    store = FileStore(devices.store_path)
    chain = await authors_chain(store, a, sid, 3)
    await a.stop()
    b = await _reopened_b(devices)
    await store.free(chain[1:])  # (freed by A's gc since)
    from sessiond.sync import rekeyproof

    walked: list = []
    real_walk = rekeyproof.claimed_before

    async def walking(*args, **kw):
        walked.append(args[1])
        return await real_walk(*args, **kw)

    monkeypatch.setattr(rekeyproof, "claimed_before", walking)
    for _ in range(3):
        await _pulled(b, sid)
        if bytes((await devices.dbb.remote(sid))["announce_pk"]) == notice["a"]:
            break
    assert bytes((await devices.dbb.remote(sid))["announce_pk"]) == notice["a"]  # (taken: switched)
    assert walked == [], walked  # (nothing checked again: the switch resumed from the rekey's record)
    assert b.ctx.keys.session_key(sid) == new_key
    assert await _walks(devices.dbb) == []  # (settled with the switch: dropped)


@pytest.mark.parametrize("ends", ["at_its_bound", "at_a_manifest_gone"])
async def test_a_walk_found_by_a_verify_meanwhile_is_not_written_over_by_the_pulls_cut(devices, monkeypatch, ends):
    """A `verify` (doctor runs one) checks the notice as a pull does, beside it (not under the pull's generation
    lock): its walk ends finding A's claim and keeps that row while the pull's walk of the same head, begun before,
    is still under way; the pull's walk then reached its bound and wrote where it stopped over that row (a cut, not
    found), and refused the notice for now. A kill before the next pull took it (from memory: _WALKED), and the
    restart went on from that cut, past manifests A's gc freed since: refused for good. `at_a_manifest_gone`: the
    pull's walk does not reach its bound, it ends at a manifest it cannot read (A's gc freed it between the verify's
    read and the pull's, or a store catching up), and kept where it ended over the row found (the cuts it began with
    had no found one): refused at that pull, and the restart went on from there, at the manifest gone. The found row
    wins."""
    a, b, sid, notice, new_key, _claims = await _aged_out(devices, "walk verified", CLAIMS_KEPT + 2)
    await _slot_served_with(devices, sid, notice)
    store = FileStore(devices.store_path)
    chain = await authors_chain(store, a, sid, 3)
    await a.stop()  # (its head stays)
    late = [0.0]  # (the pull's bound reached once the verify is done: its clock moved on)
    monkeypatch.setattr(rekeywalk, "time", types.SimpleNamespace(monotonic=lambda: time.monotonic() + late[0]))
    bs = await b.ctx.store_for(sid)
    held, release = asyncio.Event(), asyncio.Event()
    real_get = bs.get

    async def get(h, *args, **kw):
        if h == chain[1] and not held.is_set():  # (the pull's walk, past A's head: held there)
            held.set()
            await release.wait()
        return await real_get(h, *args, **kw)

    monkeypatch.setattr(bs, "get", get)
    pull = asyncio.create_task(b.pull(sid))
    try:
        await asyncio.wait_for(held.wait(), 10)
        report = await b.verify(sid)  # (its walk ends: the claim found, kept)
        assert report["sessions"][0]["ok"], report
        if ends == "at_its_bound":
            late[0] = 3600.0
        else:
            await store.free(chain[2:3])  # (the next the pull's walk reads: gone since the verify read it)
    finally:
        release.set()
        with contextlib.suppress(ImportError_):
            await pull
    b = await _reopened_b(devices)  # (killed before another pull)
    await store.free(chain[1:])  # (freed by A's gc since)
    await _pulled(b, sid)
    # main: the pull's cut (or end) written over the row found, gone on from after a restart: refused at the
    # manifest freed
    assert b.ctx.keys.session_key(sid) == new_key
