"""Members objects a members slot no longer names are freed by gc, by the device that put them.

A shared session's members slot names a members object. Written over (a device joins and lists itself,
a rekey leaves its notice in it), the object it named before is named by nothing: it stayed in the store
for good, one small object per write. The device that put it now records it (Released.put_for_slot) and
lets it go once it sees the slot written over (SyncContext.named); gc frees it after its grace. A device
never frees another's: what a home from before the record wrote stays. A device that read the slot just
before it was written over and finds the object gone reads the slot again and goes on."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Callable

import pytest

from servers.kubo import Node, make_rpc_app
from servers.s5portal import Running
from sessiond.stores import FileStore, Store
from sessiond.stores.kubo import KuboStore


def _files(folder: str) -> set[bytes]:
    out = set()
    for _path, _dirs, files in os.walk(os.path.join(folder, "objects")):
        out.update(bytes.fromhex(f) for f in files if not f.startswith(".") and len(f) == 64)
    return out


@contextlib.asynccontextmanager
async def _stores(kind: str, tmp: str) -> AsyncIterator[tuple[Store, Store, Callable[[], set[bytes]]]]:
    """A's and B's clients of one store of `kind`, and what the store holds (a Kubo node: what is pinned)."""
    if kind == "folder":
        folder = os.path.join(tmp, "store")
        yield FileStore(folder), FileStore(folder), lambda: _files(folder)
        return
    node = Node()
    rpc = await Running(make_rpc_app(node)).start()
    try:
        url = f"ipfs+http://127.0.0.1:{rpc.port}"
        yield KuboStore(url), KuboStore(url), lambda: set(node.pins)
    finally:
        await rpc.stop()


async def _slot_object(dev, sid: str, announce_pk: bytes | None = None) -> bytes:
    """What the members slot of `sid` (the current one, or that of `announce_pk`) names, as the store has it."""
    if announce_pk is None:
        announce_pk = bytes((await dev.ctx.db.remote(sid))["announce_pk"])
    entry = await dev.ctx.store.get_head(b"\xed" + announce_pk)
    return bytes(entry.data[1:33])


async def _named(dev, sid: str, *old_slots: bytes) -> set[bytes]:
    """Every object a current head of `sid` names (its members slot, each writer's log down to its nodes and
    parts: gc's own reading), and what the members slots of `old_slots` (announce keys) name."""
    return await dev.collector.live(sid) | {await _slot_object(dev, sid, pk) for pk in old_slots}


async def _shared_code(devices, store_a: Store, store_b: Store, a_kw: dict | None = None) -> tuple[str, str]:
    """A and B started on their stores (`a_kw`: A's Syncer keyword arguments), and a session of A's with one
    message shared read-write, its code not imported yet: (session, code)."""
    a, b = await devices.open(store_a=store_a, store_b=store_b, a=a_kw)
    await a.start()
    await b.start()
    sid = (await devices.dba.create_session({"name": "members gc"}))["id"]
    await devices.dba.append_messages(sid, [{"role": "user", "content": "first"}])
    return sid, (await a.share(sid, write=True, passphrase=None, expires_in=None))["code"]


async def _joined(devices, store_a: Store, store_b: Store) -> str:
    """A's session shared read-write with B, B listed in its members slot and both synced: its id."""
    sid, code = await _shared_code(devices, store_a, store_b)
    a, b = devices.a, devices.b
    await b.import_code(code, None)
    await devices.dbb.append_messages(sid, [{"role": "assistant", "content": "B was here"}])
    assert (await b.sync_now(sid, wait=True, timeout=20))["complete"]
    assert (await a.sync_now(sid, wait=True, timeout=20))["complete"]
    return sid


@pytest.mark.parametrize("kind", ["folder", "kubo"])
async def test_a_members_object_written_over_by_a_joining_device_is_freed_by_its_writer(devices, tmp_path, kind):
    async with _stores(kind, str(tmp_path)) as (store_a, store_b, held):
        sid, code = await _shared_code(devices, store_a, store_b)
        a, b = devices.a, devices.b
        shared = await _slot_object(a, sid)  # A's members object, listing A
        await b.import_code(code, None)  # B lists itself: a members object of B's in the slot
        assert await _slot_object(a, sid) != shared
        assert (await a.sync_now(sid, wait=True, timeout=20))["complete"]  # (A reads the slot written over)

        await b.gc(grace=0, dry_run=False)
        assert shared in held()  # B never frees what another device put
        await a.gc(grace=0, dry_run=False)
        assert held() == await _named(a, sid)  # main: A's members object left, named by nothing
        assert (await a.verify(sid))["ok"] and (await b.verify(sid))["ok"]


@pytest.mark.parametrize("kind", ["folder", "kubo"])
async def test_a_rekey_leaves_no_members_object_of_either_device_after_gc(devices, tmp_path, kind):
    async with _stores(kind, str(tmp_path)) as (store_a, store_b, held):
        sid = await _joined(devices, store_a, store_b)
        old = bytes((await devices.dba.remote(sid))["announce_pk"])
        await devices.a.rekey(sid)  # its notice over B's members object in the old slot; a new slot
        assert (await devices.b.sync_now(sid, wait=True, timeout=20))["complete"]  # B takes it
        await devices.dbb.append_messages(sid, [{"role": "assistant", "content": "after"}])
        assert (await devices.b.sync_now(sid, wait=True, timeout=20))["complete"]
        assert (await devices.a.sync_now(sid, wait=True, timeout=20))["complete"]
        await devices.a.gc(grace=0, dry_run=False)
        await devices.b.gc(grace=0, dry_run=False)
        # the notice stays, named by the old slot (a device yet to take the rekey reads it there)
        assert held() == await _named(devices.a, sid, old)  # main: B's members object left in the old slot
        assert (await devices.a.verify(sid))["ok"] and (await devices.b.verify(sid))["ok"]


async def test_a_members_slot_the_store_lost_written_again_leaves_its_old_object_to_gc(devices, tmp_path):
    """The store lost the slot's entry (its object still there): A writes the slot again (restore), with a
    new members object; the one it named before is A's to free. A polls once an hour: a pull of A's own finding
    the slot lost would restore it too, at once with the test's, its members object put and the slot not yet
    written when gc runs (gc leaves it: `naming`), so that the store held one object more than the heads named."""
    async with _stores("folder", str(tmp_path)) as (store_a, store_b, held):
        sid, _code = await _shared_code(devices, store_a, store_b, {"interval": 3600, "poll_interval": 3600})
        a = devices.a
        assert (await a.sync_now(sid, wait=True, timeout=20))["complete"]  # (A's log pushed: no put in flight)
        lost = await _slot_object(a, sid)
        announce = bytes((await devices.dba.remote(sid))["announce_pk"])
        os.remove(os.path.join(str(tmp_path), "store", "heads", (b"\xed" + announce).hex()))
        assert await a.members.restore(sid)
        assert await _slot_object(a, sid) != lost
        await a.gc(grace=0, dry_run=False)
        assert held() == await _named(a, sid)  # main: the members object the lost entry named, left
        assert (await a.verify(sid))["ok"]


async def test_a_device_that_read_the_slot_before_it_was_written_over_reads_it_again(devices, tmp_path):
    """B reads the members slot's entry; before it fetches the object named there, A writes the slot over
    (a rekey's notice) and frees that object (gc, no grace). B's fetch finds it gone: it reads the slot
    again and takes the rekey, its pull neither failing nor taking the slot as damaged."""
    async with _stores("folder", str(tmp_path)) as (store_a, store_b, held):
        sid = await _joined(devices, store_a, store_b)
        a, b = devices.a, devices.b
        real, raced, known, target = store_b.get_capped, [], asyncio.Event(), b""

        async def get_capped(h: bytes, limit: int, what: str = "an object") -> bytes:
            # B's follower polls (every 0.25 s) while A rekeys: a pull of its own may read the new slot before
            # the test knows what it names, and B would have taken the rekey with nothing raced. Held until
            # then; whichever pull of B's reads the object first (the poll's or sync_now's) meets the race.
            await known.wait()
            if bytes(h) == target and not raced:  # B has read the entry naming it: A writes the slot over now
                raced.append(h)
                await a.rekey(sid)
                await a.gc(grace=0, dry_run=False)
                assert target not in held()  # freed under B's read
            return await real(h, limit, what)

        store_b.get_capped = get_capped  # type: ignore[method-assign]
        await a.rekey(sid)  # the new slot: A's members object, which B has not read yet
        new = bytes((await devices.dba.remote(sid))["announce_pk"])
        target = await _slot_object(a, sid)
        known.set()
        assert (await b.sync_now(sid, wait=True, timeout=20))["complete"]
        assert raced and sid not in b.ctx.pull_errors, b.ctx.pull_errors
        # B is on the second rekey's key and slot, and writes through it
        now = bytes((await devices.dbb.remote(sid))["announce_pk"])
        assert now != new and now == bytes((await devices.dba.remote(sid))["announce_pk"])
        await devices.dbb.append_messages(sid, [{"role": "assistant", "content": "after both"}])
        assert (await b.sync_now(sid, wait=True, timeout=20))["complete"]
        assert (await a.sync_now(sid, wait=True, timeout=20))["complete"]
        assert "after both" in [m["content"] for m in await devices.dba.list_messages(sid, limit=100)]


async def test_a_home_from_before_the_record_leaves_its_old_members_objects_and_frees_none_of_another(
    devices, tmp_path
):
    """Upgraded from before schema 24, a home has no record of the members objects it put: those written
    over stay in the store (it cannot tell them from another device's), and none of another's is freed."""
    async with _stores("folder", str(tmp_path)) as (store_a, store_b, held):
        sid, code = await _shared_code(devices, store_a, store_b)
        a, b = devices.a, devices.b
        shared = await _slot_object(a, sid)
        await devices.dba.c.write("DELETE FROM slot_objects")  # as a home migrated after the share has it
        await b.import_code(code, None)
        assert (await a.sync_now(sid, wait=True, timeout=20))["complete"]
        await a.gc(grace=0, dry_run=False)
        await b.gc(grace=0, dry_run=False)
        assert held() == await _named(a, sid) | {shared}  # A's old object left; nothing named freed


def _joined_by_cli(make_daemon, kind: str, what: str, point: str | None) -> int:
    """A's session shared read-write and imported by B; `what` "join": B's daemon killed at `point` on the way
    (its members slot written over), and started again; "rekey": then rekeyed by A twice, the second killed
    at `point` (its notice written over A's members object in the slot), and started again. Both synced and
    gc'd (no grace), then a third device imports it and verifies it: how many objects the store (of `kind`)
    holds."""
    from conftest import cli_json, run_cli, wait_for
    from test_crash_members_orphans import _key, _rekeying
    from test_crash_ops import _clean
    from test_crash_push_orphans import _store
    from test_crash_share import _killed_at

    with _store(kind) as (url, held):
        a, b = make_daemon(url).start(), make_daemon(url).start()
        sid = a.client().create_session(name="joined", checkpoint_interval=10**9)["id"]
        a.client().append(sid, "user", "first")
        code = a.client().share(sid, write=True)["code"]
        if what == "join" and point is not None:
            _killed_at(b, point, "import", input=code)  # (its resumed push finds B listed)
        else:
            b.client().import_code(code)
        b.client().append(sid, "assistant", "B was here")
        if what == "rekey":
            b.client().sync(sid, wait=True)
            a.client().rekey(sid)  # the new slot: A's members object, listing A and B
            if point is not None:
                old = _key(a, sid)
                _killed_at(a, point, "rekey", sid)  # (the start's first pull finishes it)
                wait_for(  # (its record gone: the key rotates before the new slot's write and the push)
                    lambda: _key(a, sid) != old and not _rekeying(a, sid),
                    timeout=30,
                    what="the rekey finished at the start",
                )
            else:
                a.client().rekey(sid)
        for d in (b, a, b):
            wait_for(lambda d=d: run_cli(d.home, "verify", "--json").returncode == 0, timeout=20, what="verify")
            _clean(d)
        for d in (b, a):
            cli_json(d.home, "gc", "--grace", "0")
        c = make_daemon(url).start()
        c.client().import_code(a.client().share(sid)["code"])  # the slot reads whole: nothing it names freed
        assert [m["content"] for m in c.client().messages(sid)["messages"]] == ["first", "B was here"]
        assert c.client().verify(sid)["ok"]
        n = len(held())
        for d in (a, b, c):
            d.stop()
        return n


@pytest.mark.parametrize("kind", ["folder", "relay", "kubo"])
@pytest.mark.parametrize("what,point", [("join", "members:set"), ("rekey", "rekey:notice_set")])
def test_a_device_killed_after_writing_the_slot_over_leaves_it_readable_and_nothing_after_gc(
    make_daemon, kind, what, point
):
    """Killed between its write of the members slot (over a members object: A's, by B joining; A's own, by
    A's rekey notice) and letting go of what it named before: the slot names the new object, which stays;
    the old one is freed by its writer's gc, as without the kill (one members object fewer than before the
    record, where it stayed in the store for good)."""
    crashed = _joined_by_cli(make_daemon, kind, what, point)
    clean = _joined_by_cli(make_daemon, kind, what, None)
    assert crashed == clean, (crashed, clean)


async def _rows(db) -> dict[str, list]:
    """gc's records in `db`: its candidates and the members objects this device put, row for row."""
    return {
        table: [tuple(r) for r in await db.c.committed.fetchall(f"SELECT * FROM {table} ORDER BY store_url, hash")]
        for table in ("released", "slot_objects")
    }


async def _written_over_unseen(devices, tmp_path) -> tuple[str, bytes, Callable[[], set[bytes]]]:
    """A's session shared read-write, B's import writing the members slot over A's members object, which A has
    not seen (A polls once an hour: no pull of A's reads the slot meanwhile); and a gc candidate due (another
    session's head moved on: gc reads the heads): (session, A's object, what the store holds)."""
    folder = os.path.join(str(tmp_path), "store")
    store_a, store_b = FileStore(folder), FileStore(folder)
    a, b = await devices.open(store_a=store_a, store_b=store_b, a={"interval": 3600, "poll_interval": 3600})
    await a.start()
    sid = (await devices.dba.create_session({"name": "members gc"}))["id"]
    await devices.dba.append_messages(sid, [{"role": "user", "content": "first"}])
    code = (await a.share(sid, write=True, passphrase=None, expires_in=None))["code"]
    mine = await _slot_object(a, sid)
    await b.import_code(code, None)
    assert await _slot_object(a, sid) != mine
    other = (await devices.dba.create_session({"name": "not shared"}))["id"]
    for text in ("one", "two"):  # (its head moved on: a candidate due, so that gc reads the heads)
        await devices.dba.append_messages(other, [{"role": "user", "content": text}])
        await a.push(other)  # (not sync_now: that wakes A's follower, which would read the slot)
    return sid, mine, lambda: _files(folder)


async def test_a_dry_run_of_gc_changes_nothing(devices, tmp_path):
    """`gc --dry-run` read the members slot of each shared session and, finding A's object written over, let it
    go in the database (a candidate from then on, its slot record gone): a dry run that changed gc's records.
    It changes nothing now, and counts what the run would free, that object among it; the run then frees it."""
    sid, mine, held = await _written_over_unseen(devices, tmp_path)
    a = devices.a
    before = await _rows(devices.dba)
    assert any(bytes(r[1]) == mine for r in before["slot_objects"]), before  # A's, not let go yet
    dry = await a.gc(grace=0, dry_run=True)
    assert await _rows(devices.dba) == before  # main: A's object moved from slot_objects to released
    assert mine in held()
    done = await a.gc(grace=0, dry_run=False)
    assert mine not in held() and done["objects"] == dry["objects"] >= 2, (dry, done)  # (and the other's manifest)
    assert (done["kept"], done["bytes"]) == (dry["kept"], dry["bytes"]), (dry, done)
    assert held() == set().union(*[await _named(a, s) for s in await devices.dba.session_ids()])


async def test_the_members_objects_of_a_deleted_session_are_still_freed_once_written_over(devices, tmp_path):
    """A session deleted here while its slot named A's members object, written over since by another device,
    left A's record of that object for good (nothing here reads that slot again), and the object in the store.
    gc now reads the slot of each deleted session this device put objects for: what it no longer names is let
    go and freed, its record with it; what it still names stays in the store, its record dropped (no later gc reads
    that slot again: test_gc_removed_slots.py)."""
    sid, mine, held = await _written_over_unseen(devices, tmp_path)
    a = devices.a
    assert await devices.dba.delete_session(sid, head_pk=a.keys.head_pk(sid))
    await a.gc(grace=0, dry_run=False)
    assert mine not in held()  # main: left in the store, named by nothing
    assert (await _rows(devices.dba))["slot_objects"] == []  # main: its record left for good
    # a deleted session whose slot still names A's object: kept, object and record
    kept = (await devices.dba.create_session({"name": "still named"}))["id"]
    await devices.dba.append_messages(kept, [{"role": "user", "content": "first"}])
    await a.share(kept, write=True, passphrase=None, expires_in=None)
    named = await _slot_object(a, kept)
    assert await devices.dba.delete_session(kept, head_pk=a.keys.head_pk(kept))
    await a.gc(grace=0, dry_run=False)
    assert named in held()
    assert (await _rows(devices.dba))["slot_objects"] == []
    await a.gc(grace=0, dry_run=False)  # (not read again: no candidate, nor freed)
    assert named in held()


async def test_a_dry_run_counts_what_it_would_let_go_when_the_clock_turns_meanwhile(devices, tmp_path, monkeypatch):
    """The dry run's count took its grace's cutoff before the slots' reads stamped what they would let go: when the
    clock's millisecond turned in between (a loaded machine), a grace of 0 counted A's written-over object as
    waiting, not due: the dry run said 1 object where the run freed 2 (a flake under CI's load). Here the clock turns
    at every reading (the clock since boot, which steady() stamps releases and gc's cutoffs by: storage/clock.py)."""
    from sessiond.storage import clock

    sid, mine, held = await _written_over_unseen(devices, tmp_path)
    since_boot, ticks = clock._elapsed, [0.0]

    def ticking() -> float:
        ticks[0] += 0.001
        return since_boot() + ticks[0]

    monkeypatch.setattr(clock, "_elapsed", ticking)
    dry = await devices.a.gc(grace=0, dry_run=True)
    done = await devices.a.gc(grace=0, dry_run=False)
    assert mine not in held() and done["objects"] == dry["objects"] >= 2, (dry, done)
