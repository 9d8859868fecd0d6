"""A store of a mirror that comes back holding another copy of the members slot's revision the device read.

Device A syncs through a mirror of two folder stores; B uses the second alone, C the first alone. While the
second is away for A (a share not mounted: its folder gone, for A only), B and C each write the slot's next
revision N to their one store. A, reading the first store alone, takes C's revision N: nothing to merge among
the stores it could ask. The second store comes back holding B's revision N: A's pulls saw no new revision, so
A never looked again (the two copies stayed apart until a `sessiond sync` on A or the slot's next revision),
and a device on either store alone followed only the writers its copy listed. A merges them once the store is
back: revision N + 1 on both stores, listing the three writers.

Two rekeys at once whose notices the stores of a mirror would take apart: at most one finishes (a rekey's notice is read
from and written to every store of a mirror: sync/mirrorstrict.py)."""

from __future__ import annotations

import asyncio
import os
import time

from conftest import eventually, wait_for
from sessiond.storage.database import Database
from sessiond.stores import FileStore, StaleHead, StoreError
from sessiond.stores.cid import digest
from sessiond.sync.engine import Syncer
from sessiond.sync.errors import ImportError_
from sessiond.sync.mirror import MirrorStore
from test_members_mirror_apart import LOST, contents, folder_slot, joins, shared_pushed, slot_pk, warnings, writers
from test_members_mirror_race import write_slot


def test_a_store_back_with_another_copy_of_the_slot_s_revision_is_merged_without_a_sync(make_daemon, tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    link = tmp_path / "second-for-a"  # (A's path to the second store: removed, the store is away for A alone)
    os.symlink(second, link)
    a = make_daemon([f"file://{first}", f"file://{link}"]).start()
    b, c = make_daemon(f"file://{second}").start(), make_daemon(f"file://{first}").start()
    ca = a.client()
    sid, code = shared_pushed(a)
    pk = slot_pk(a, sid)
    shared = folder_slot(str(first), pk)
    assert shared is not None and folder_slot(str(second), pk) == shared

    os.unlink(link)  # the second store away for A
    joins(b, sid, code, "b1")
    joins(c, sid, code, "c1")
    on_first, on_second = folder_slot(str(first), pk), folder_slot(str(second), pk)
    assert on_first is not None and on_second is not None
    assert on_first[0] == on_second[0] == shared[0] + 1 and on_first[1] != on_second[1]  # (one revision, apart)
    wait_for(lambda: "c1" in contents(a, sid), timeout=30, what="a follows c, on the first store")
    assert ca.devices(sid)["members_rev"] == on_first[0]

    os.symlink(second, link)  # back, holding B's copy of the revision A read from the first store
    wait_for(
        lambda: (
            (folder_slot(str(first), pk) or (0,))[0] == on_first[0] + 1
            and folder_slot(str(first), pk) == folder_slot(str(second), pk)
        ),
        timeout=60,
        what="the two copies merged on both stores (no sync asked)",
    )
    wait_for(lambda: {"b1", "c1"} <= set(contents(a, sid)), timeout=30, what="a follows both b and c")
    for d in (b, c):  # each reads the merged slot on its one store: the three writers
        assert d.client().sync(sid, wait=True, timeout=30)["complete"]
    names = writers(a, sid)
    assert len(names) == 3 and writers(b, sid) == writers(c, sid) == names, names
    assert not [w for w in warnings(a) if LOST in w], warnings(a)


async def _slots_apart(tmp_path):
    """A (stopped) on a mirror of two folder stores, its shared session's slot at revision n + 1 held apart: the
    first store's copy listing A and C, the second's A and B. (db, a, sid, n, first, second, c_slot, b_slot)."""
    db = await Database.open(str(tmp_path / "a.sqlite"))
    keys = str(tmp_path / "keys")
    mirror = MirrorStore([FileStore(str(tmp_path / "first")), FileStore(str(tmp_path / "second"))], db.outbox)
    a = Syncer(db, mirror, keys, timeout=10, interval=3600.0, poll_interval=3600.0)
    await mirror.started()
    await a.start()
    sid = (await db.create_session({"name": "apart"}))["id"]
    await db.append_messages(sid, [{"role": "user", "content": "a1"}])
    await a.share(sid, write=True, passphrase=None, expires_in=None)
    n = (await db.remote(sid))["members_rev"]
    me = {"head_pk": a.ctx.keys.head_pk(sid), "device_id": db.device_id}
    b = {"head_pk": b"\xed" + b"b" * 32, "device_id": "device-b"}
    c = {"head_pk": b"\xed" + b"c" * 32, "device_id": "device-c"}
    first, second = FileStore(str(tmp_path / "first")), FileStore(str(tmp_path / "second"))
    c_slot = await write_slot(first, a, sid, n + 1, [me, c])
    b_slot = await write_slot(second, a, sid, n + 1, [me, b])
    await a.stop()
    return db, a, sid, n, first, second, c_slot, b_slot


async def test_a_store_read_with_writes_waiting_for_it_is_checked_once_they_are_sent(tmp_path):
    """A restarts with writes waiting in the second store's outbox (it was down), and the second store holds B's
    copy of the slot's revision N, the first C's. A's first pull reads both through the mirror, but the restore
    reads only the stores caught up (the second lacks A's writes until they are sent): nothing to merge then. Once
    the outbox is sent, A's next poll checks the session again and merges them, with no `sessiond sync`."""
    db, a, sid, n, first, second, c_slot, b_slot = await _slots_apart(tmp_path)
    keys = str(tmp_path / "keys")

    sent = asyncio.Event()
    real_put = second.put

    async def held(data: bytes) -> bytes:  # (the outbox sent only once the test lets it)
        await sent.wait()
        return await real_put(data)

    second.put = held  # type: ignore[method-assign]
    await db.outbox.add_objects(second.url, [(digest(b"waiting"), b"waiting")])
    mirror = MirrorStore([first, second], db.outbox)
    a = Syncer(db, mirror, keys, timeout=10, interval=3600.0, poll_interval=3600.0)
    try:
        await mirror.started()
        await a.start()
        await a.follower.pull(sid)
        assert (await db.remote(sid))["members_rev"] == n + 1
        assert [await st.get_head(c_slot.pk) for st in (first, second)] == [c_slot, b_slot]  # (apart: not merged)

        sent.set()
        deadline = time.monotonic() + 20
        while (held_now := [await st.get_head(c_slot.pk) for st in (first, second)])[0] in (c_slot, b_slot):
            assert time.monotonic() < deadline, "the two copies were not merged once the outbox was sent"
            await a.follower.poll()
            await asyncio.sleep(0)  # (the drain's turn)
        assert held_now[0] == held_now[1] and held_now[0] is not None and held_now[0].revision == n + 2, held_now
        rev, listed, _notice = await a.members.read_members(second, sid, a.ctx.keys.session_key(sid), c_slot.pk[1:])
        assert rev == n + 2 and {m["device_id"] for m in listed} == {db.device_id, "device-b", "device-c"}
    finally:
        await a.stop()
        await db.close()


async def test_a_store_read_with_a_direct_write_under_way_is_checked_once_it_ends(tmp_path):
    """As above, the second store behind by a write sent straight to it (no outbox) and still under way when A's pull
    reads the slot apart: not counted caught up, so the restore then would leave it out; and the write's end counts
    no catch-up (its outbox never held it). A's next poll checks the session once the write has ended, and merges
    the two copies, with no `sessiond sync` (sync/mirrorapart.py Apart.back: the stores seen apart all caught up)."""
    db, a, sid, n, first, second, c_slot, b_slot = await _slots_apart(tmp_path)
    keys = str(tmp_path / "keys")

    ended = asyncio.Event()
    real_put_many = second.put_many

    async def held(*args, **kw):  # (the direct write to the second store ends only once the test lets it)
        await ended.wait()
        return await real_put_many(*args, **kw)

    second.put_many = held  # type: ignore[method-assign]
    mirror = MirrorStore([first, second], db.outbox, lag=60.0)  # (not failed to its outbox while the test holds it)
    a = Syncer(db, mirror, keys, timeout=10, interval=3600.0, poll_interval=3600.0)
    try:
        await mirror.started()
        await a.start()
        writing = asyncio.ensure_future(mirror.put(b"under way"))
        await eventually(lambda: mirror.health[second.url].writing == 1, timeout=10, what="the write under way")
        await a.follower.pull(sid)
        assert (await db.remote(sid))["members_rev"] == n + 1
        assert [await st.get_head(c_slot.pk) for st in (first, second)] == [c_slot, b_slot]  # (apart: not merged)
        assert second not in mirror.caught_up()
        await a.follower.poll()  # (the start's full round, the write still under way: no check yet)
        assert [await st.get_head(c_slot.pk) for st in (first, second)] == [c_slot, b_slot]

        ended.set()
        await asyncio.wait_for(writing, 10)
        assert mirror.health[second.url].pending == 0  # (taken straight: no outbox, no catch-up)
        deadline = time.monotonic() + 20
        while (held_now := [await st.get_head(c_slot.pk) for st in (first, second)])[0] in (c_slot, b_slot):
            assert time.monotonic() < deadline, "the two copies were not merged once the write had ended"
            await a.follower.poll()
            await asyncio.sleep(0)
        assert held_now[0] == held_now[1] and held_now[0] is not None and held_now[0].revision == n + 2, held_now
    finally:
        await a.stop()
        await db.close()


async def mirror_side(tmp_path, name: str):
    """Device `name` (started) on a mirror of the two folder stores `first` and `second` under `tmp_path`, through
    store objects of its own, its database and keys there too (opened again on the same files: its restart):
    (db, syncer, first, second)."""
    db = await Database.open(str(tmp_path / f"{name}.sqlite"))
    first, second = FileStore(str(tmp_path / "first")), FileStore(str(tmp_path / "second"))
    mirror = MirrorStore([first, second], db.outbox)
    syncer = Syncer(db, mirror, str(tmp_path / f"keys-{name}"), timeout=10, interval=3600.0, poll_interval=3600.0)
    await mirror.started()
    await syncer.start()
    return db, syncer, first, second


async def _rekeying_pair(tmp_path):
    """A and B (started), each on a mirror of the same two folder stores through store objects of its own (one can be
    away for one device alone: _away), and A's session shared read-write with B, which joined and pushed:
    (sid, (db, syncer, first, second) of A, the same of B)."""
    sides = [await mirror_side(tmp_path, name) for name in ("a", "b")]
    (dba, a, _, _), (dbb, b, _, _) = sides
    sid = (await dba.create_session({"name": "rekeyed twice"}))["id"]
    await dba.append_messages(sid, [{"role": "user", "content": "a1"}])
    code = (await a.share(sid, write=True, passphrase=None, expires_in=None))["code"]
    await b.import_code(code, None)
    await dbb.append_messages(sid, [{"role": "user", "content": "b1"}])
    await b.push(sid)
    await a.pull(sid)
    return sid, sides[0], sides[1]


def _away(store: FileStore) -> None:
    """`store` down for the device whose store object it is (a share not mounted, a partition): every call fails."""

    async def down(*args, **kw):
        raise StoreError(f"{store.url}: away (test)")

    for name in ("get", "get_capped", "has", "put", "put_many", "get_head", "set_head"):
        setattr(store, name, down)


async def _slot_pk(db: Database, sid: str) -> bytes:
    """The registry key of the members slot of `sid` as `db`'s device knows it (0xed | announce key)."""
    return b"\xed" + bytes((await db.remote(sid))["announce_pk"])


def _at_most_one_finished(done: list) -> None:
    """Of A's and B's rekeys (their answers or errors, `done`), one finished at the most."""
    finished = [name for name, r in zip("AB", done) if isinstance(r, dict)]
    assert len(finished) <= 1, f"both rekeys finished: {done}"


async def _closed(*sides) -> None:
    """Each (database, syncer) of `sides`, given flat, stopped and closed."""
    for db, syncer in zip(sides[::2], sides[1::2]):
        await syncer.stop()
        await db.close()


async def test_two_rekeys_at_once_each_taken_by_another_store_of_a_mirror_do_not_both_finish(tmp_path):
    """A and B both hold the write key and rekey at the same time, the second store away for A and the first for B (a
    partition). Was: A's notice taken by the first store (queued for the second), B's by the second (queued for the
    first), each at the old slot's next revision; each rekey saw one store take its notice and none refuse it, and
    finished: two new keys, each device sure it rekeyed, the stores holding two notices of one revision; from then on
    each device's pull found the other's log `damaged` (sealed under a key it lacks), and nothing either wrote reached
    the other. At most one of two rekeys at once may finish: here neither, each refused (`store`) naming the store
    it cannot reach, before anything was written."""
    sid, (dba, a, _, a_second), (dbb, b, b_first, _) = await _rekeying_pair(tmp_path)
    old = a.ctx.keys.session_key(sid)
    try:
        _away(a_second)
        _away(b_first)
        done = await asyncio.gather(a.rekey(sid), b.rekey(sid), return_exceptions=True)
        _at_most_one_finished(done)
        for r, away in zip(done, (a_second, b_first)):
            assert isinstance(r, ImportError_) and r.kind == "store", done
            assert away.url in str(r) and "nothing was rekeyed" in str(r), r
        assert a.ctx.keys.session_key(sid) == b.ctx.keys.session_key(sid) == old
    finally:
        await _closed(dba, a, dbb, b)


async def test_a_rekey_refused_by_one_store_for_another_rekey_s_notice_does_not_finish_too(tmp_path):
    """A and B rekey at once, both having read the old slot at revision r; the second store then takes no head from A
    (away once A has read it), so A's notice (revision r + 1) is taken by the first store alone: A finished (was; now
    refused, `store`, its record kept for its next pull). B's notice is taken by the second store and refused as
    stale by the first, which then fails B's read (a store that stops answering). Was: B read the slot again from the
    second store alone, found its own notice, wrote it again at r + 2 (the first's refusal suppressed) and finished
    too. The first store held another rekey's notice, not a join's members write: B cannot tell whether that rekey
    finished, and may not finish as well (now refused, `store`, as its read needs every store)."""
    sid, (dba, a, a_first, a_second), (dbb, b, b_first, _) = await _rekeying_pair(tmp_path)
    slot = await _slot_pk(dba, sid)
    b_publishing, a_done = asyncio.Event(), asyncio.Event()
    refused: list[StaleHead] = []
    a_set, b_set = a_first.set_head, b_first.set_head

    async def a_after_b_read(entry):  # (A's notice to the first store once B has read revision r and publishes)
        if entry.pk == slot:
            await b_publishing.wait()
        return await a_set(entry)

    async def b_after_a_done(entry):  # (B's to the first store once A's rekey has finished: refused as stale)
        if entry.pk == slot and not b_publishing.is_set():
            b_publishing.set()
            await a_done.wait()
            try:
                return await b_set(entry)
            except StaleHead as exc:
                refused.append(exc)
                raise
            finally:
                _away(b_first)  # (and then no answer from it)
        return await b_set(entry)

    async def a_rekey():
        try:
            return await a.rekey(sid)
        finally:
            a_done.set()

    async def a_second_away(entry):  # (the second store away for A once A has read the slot)
        raise StoreError(f"{a_second.url}: away (test)")

    try:
        a_second.set_head = a_second_away  # type: ignore[method-assign]
        a_first.set_head = a_after_b_read  # type: ignore[method-assign]
        b_first.set_head = b_after_a_done  # type: ignore[method-assign]
        done = await asyncio.gather(a_rekey(), b.rekey(sid), return_exceptions=True)
        assert refused, "B's notice was not refused by the first store"  # (the retry path taken)
        _at_most_one_finished(done)
        assert all(isinstance(r, ImportError_) and r.kind == "store" for r in done), done
    finally:
        await _closed(dba, a, dbb, b)


async def test_two_rekeys_at_once_whose_notices_each_store_took_in_another_order_finish_one(tmp_path):
    """Both stores answer both devices: A's notice reaches the first store before B's, B's the second before A's (each
    of the two refused as stale by one store). Each rekey reads the slot again from both stores, and both rank the two
    notices of one revision alike (MirrorStore.get_head): one finishes, writing its notice again a revision on, and
    the other gives way (`conflict`, taken at its next pull)."""
    sid, (dba, a, a_first, a_second), (dbb, b, b_first, b_second) = await _rekeying_pair(tmp_path)
    slot = await _slot_pk(dba, sid)
    a_first_done, b_second_done = asyncio.Event(), asyncio.Event()
    held = {"a second", "b first"}  # (the first write of the slot of each there: the notice)

    def ordered(set_head, name: str, after: asyncio.Event | None, then: asyncio.Event | None):
        async def write(entry):
            if entry.pk != slot:  # (a head of a device's log: a rekey's claim)
                return await set_head(entry)
            if after is not None and name in held:
                held.discard(name)
                await after.wait()
            try:
                return await set_head(entry)
            finally:
                if then is not None:
                    then.set()

        return write

    a_first.set_head = ordered(a_first.set_head, "a first", None, a_first_done)  # type: ignore[method-assign]
    a_second.set_head = ordered(a_second.set_head, "a second", b_second_done, None)  # type: ignore[method-assign]
    b_first.set_head = ordered(b_first.set_head, "b first", a_first_done, None)  # type: ignore[method-assign]
    b_second.set_head = ordered(b_second.set_head, "b second", None, b_second_done)  # type: ignore[method-assign]
    try:
        done = await asyncio.gather(a.rekey(sid), b.rekey(sid), return_exceptions=True)
        assert not held, held  # (each notice was refused by one store: the other's came first there)
        assert sorted(type(r).__name__ for r in done) == ["ImportError_", "dict"], done
        lost = next(r for r in done if not isinstance(r, dict))
        assert lost.kind == "conflict" and "rekeyed by another device" in str(lost), lost
    finally:
        await _closed(dba, a, dbb, b)
