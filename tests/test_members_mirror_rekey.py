"""A rekey on a mirror needs every store of it (sync/mirrorstrict.py): refused, nothing changed, while one is down; a
rekey cut short between two stores' writes of its notice is finished (or given up, for another device's rekey that
ranks first) by its resume, every store holding the same notice at the end."""

from __future__ import annotations

import asyncio
import contextlib
import os

import pytest

from sessiond.storage.database import Database
from sessiond.stores import FileStore
from sessiond.stores.errors import ReadOnlyStore
from sessiond.sync import dagcbor
from sessiond.sync.engine import Syncer
from sessiond.sync.errors import ImportError_, store_details
from sessiond.sync.mirror import MirrorStore
from test_members_mirror_apart_back import _away, _closed, _rekeying_pair, _slot_pk
from test_members_mirror_race import write_slot


class _Killed(Exception):
    """The rekey's process killed at this point (in-process: nothing after it runs, its record as written)."""


def _back(store: FileStore) -> None:
    """`store` answering again (undoes _away, and any write held: the class's own methods)."""
    for name in ("get", "get_capped", "has", "put", "put_many", "get_head", "set_head"):
        store.__dict__.pop(name, None)


async def _heads(tmp_path, slot: bytes) -> list:
    """The slot's head as each store holds it (read straight from each folder)."""
    return [await FileStore(str(tmp_path / name)).get_head(slot) for name in ("first", "second")]


async def _texts(db: Database, sid: str) -> set[str]:
    return {m["content"] for m in await db.list_messages(sid, all_chats=True)}


async def _exchanging(sid: str, a: tuple, b: tuple) -> None:
    """A and B on one key, and what each writes reaching the other."""
    (dba, sa), (dbb, sb) = a, b
    assert sa.ctx.keys.session_key(sid) == sb.ctx.keys.session_key(sid)
    await dba.append_messages(sid, [{"role": "user", "content": "a after"}])
    await dbb.append_messages(sid, [{"role": "user", "content": "b after"}])
    await sa.push(sid)
    await sb.push(sid)
    await sa.pull(sid)
    await sb.pull(sid)
    assert {"a after", "b after"} <= (await _texts(dba, sid)) & (await _texts(dbb, sid))


async def test_a_rekey_with_a_store_of_the_mirror_down_is_refused_and_changes_nothing(tmp_path):
    """The second store away for A: A's rekey (and unshare) is refused (`store`, naming it, saying nothing was
    rekeyed) before it writes anything: no record, no claim, the old key in use, both stores' slot as it was. Back, a
    rekey works: both stores hold its notice, and B takes the new key."""
    sid, (dba, a, _, a_second), (dbb, b, _, _) = await _rekeying_pair(tmp_path)
    slot = await _slot_pk(dba, sid)
    old, before = a.ctx.keys.session_key(sid), await _heads(tmp_path, slot)
    try:
        _away(a_second)
        with pytest.raises(ImportError_) as refused:
            await a.rekey(sid)
        said = str(refused.value)
        assert refused.value.kind == "store" and a_second.url in said and "nothing was rekeyed" in said, said
        assert "every store" in said and "try again once it answers" in said, said
        details = store_details(refused.value)  # (the API error's details: the store that failed, alone)
        assert details["store"] == a_second.url and [s["store"] for s in details["stores"]] == [a_second.url], details
        with pytest.raises(ImportError_) as unshared:  # (`unshare`, a rekey: the same)
            await a.unshare(sid, None)
        assert unshared.value.kind == "store" and "cannot unshare" in str(unshared.value), unshared.value
        assert a.ctx.keys.session_key(sid) == old and a.ctx.keys.rekey_pending(sid) is None
        assert not (await dba.sync_state(sid)).get("rekey_claims")
        assert await _heads(tmp_path, slot) == before

        _back(a_second)
        await a.rekey(sid)
        new = a.ctx.keys.session_key(sid)
        assert new != old and a.ctx.keys.rekey_pending(sid) is None
        first, second = await _heads(tmp_path, slot)
        assert first == second and first is not None and first.revision == before[0].revision + 1
        await b.pull(sid)
        await _exchanging(sid, (dba, a), (dbb, b))
    finally:
        await _closed(dba, a, dbb, b)


def _killed_between(first: FileStore, second: FileStore, slot: bytes, after: asyncio.Event | None = None):
    """`first` takes the slot's next write (once `after` is set, if given); `second`'s write of it then kills the
    rekey (_Killed), `first` holding the notice and `second` not. Returns the event set once `first` took it."""
    took = asyncio.Event()
    first_set = first.set_head

    async def one(entry):
        if entry.pk == slot and after is not None:
            await after.wait()
        await first_set(entry)
        if entry.pk == slot:
            took.set()

    async def other(entry):
        if entry.pk == slot:
            await took.wait()
            raise _Killed("between the two stores' writes of the notice")
        return await FileStore.set_head(second, entry)

    first.set_head = one  # type: ignore[method-assign]
    second.set_head = other  # type: ignore[method-assign]
    return took


def _pending_unpublished(syncer: Syncer, sid: str) -> bytes:
    """The new key of `syncer`'s rekey of `sid`, whose record is kept, its notice not published."""
    raw = syncer.ctx.keys.rekey_pending(sid)
    assert raw is not None and not dagcbor.decode(raw).get("p"), "the rekey's record, not published"
    return bytes(dagcbor.decode(raw)["k"])


async def _cut_short_between(a: Syncer, sid: str, first: FileStore, second: FileStore, slot: bytes) -> bytes:
    """A's rekey of `sid` killed once `first` took its notice and `second` did not; both stores then answering as
    before. Returns its new key (its record kept, not published)."""
    _killed_between(first, second, slot)
    with pytest.raises(_Killed):
        await a.rekey(sid)
    _back(first)
    _back(second)
    return _pending_unpublished(a, sid)


async def test_a_rekey_killed_between_two_stores_is_finished_by_its_resume_on_every_store(tmp_path):
    """A is killed once the first store holds its notice (r + 1) and the second does not (the slot at r there). B's
    rekey then finds A's notice the highest of the stores: it gives way (`conflict`). A's next pull resumes: it reads
    every store, finds its notice on one only, writes it again a revision on to both, and only then switches (was:
    switched at once, the second store left without the notice, a device reading it alone never rekeyed)."""
    sid, (dba, a, a_first, a_second), (dbb, b, _, _) = await _rekeying_pair(tmp_path)
    slot = await _slot_pk(dba, sid)
    old, (r0, _) = a.ctx.keys.session_key(sid), await _heads(tmp_path, slot)
    try:
        await _cut_short_between(a, sid, a_first, a_second, slot)
        first, second = await _heads(tmp_path, slot)
        assert first.revision == r0.revision + 1 and second == r0
        assert a.ctx.keys.session_key(sid) == old

        with pytest.raises(ImportError_) as gave_way:
            await b.rekey(sid)
        assert gave_way.value.kind == "conflict", gave_way.value
        assert b.ctx.keys.rekey_pending(sid) is None

        await a.pull(sid)  # (its resume)
        assert a.ctx.keys.rekey_pending(sid) is None and a.ctx.keys.session_key(sid) != old
        first, second = await _heads(tmp_path, slot)
        assert first == second and first.revision == r0.revision + 2, (first, second)
        await b.pull(sid)
        await _exchanging(sid, (dba, a), (dbb, b))
    finally:
        await _closed(dba, a, dbb, b)


async def test_two_rekeys_killed_between_the_stores_in_crossed_order_resume_to_one(tmp_path):
    """A and B rekey at once and are both killed between their two stores' writes: the first store holds A's notice,
    the second B's (one revision, r + 1), neither published. Their resumes read every store and rank the two alike
    (the mirror's order): the first ranked finishes, writing its notice again a revision on to both stores; the other
    gives its rekey up and takes the first's at its pull. Either way: one key, both stores holding the same notice."""
    sid, (dba, a, a_first, a_second), (dbb, b, b_first, b_second) = await _rekeying_pair(tmp_path)
    slot = await _slot_pk(dba, sid)
    old, (r0, _) = a.ctx.keys.session_key(sid), await _heads(tmp_path, slot)
    b_took = _killed_between(b_second, b_first, slot)  # (B's notice: the second store, then killed)
    a_took = _killed_between(a_first, a_second, slot, after=b_took)  # (A's: the first, once B's is on the second)
    try:
        done = await asyncio.gather(a.rekey(sid), b.rekey(sid), return_exceptions=True)
        assert [type(r) for r in done] == [_Killed, _Killed] and a_took.is_set(), done
        for st in (a_first, a_second, b_first, b_second):
            _back(st)
        keys = {"a": _pending_unpublished(a, sid), "b": _pending_unpublished(b, sid)}
        first, second = await _heads(tmp_path, slot)
        assert first.revision == second.revision == r0.revision + 1 and first != second
        ranked = "a" if first.data > second.data else "b"  # (A's on the first store: MirrorStore.get_head's order)

        await a.pull(sid)
        await b.pull(sid)
        await a.pull(sid)  # (the one that gave way takes the other's notice as written again)
        assert a.ctx.keys.rekey_pending(sid) is None and b.ctx.keys.rekey_pending(sid) is None
        assert a.ctx.keys.session_key(sid) == keys[ranked] != old, ranked
        first, second = await _heads(tmp_path, slot)
        assert first == second and first.revision == r0.revision + 2, (first, second)
        await _exchanging(sid, (dba, a), (dbb, b))
    finally:
        await _closed(dba, a, dbb, b)


async def test_a_rekey_that_kept_finding_the_slot_changed_on_a_mirror_keeps_its_record(tmp_path):
    """Another writer's members write reaches the second store at each revision A's notice is written at, just
    before A's: A's notice is taken by the first store and refused by the second, each of its five attempts, and
    A's rekey ends `busy`. Its notice is on the first store all the same: its record is kept (was: its claim
    withdrawn and its record dropped, leaving a notice its author no longer claims), and the next pull finishes it,
    every store holding the same slot."""
    sid, (dba, a, _, a_second), (dbb, b, _, _) = await _rekeying_pair(tmp_path)
    slot = await _slot_pk(dba, sid)
    old = a.ctx.keys.session_key(sid)
    writers = [
        {"head_pk": a.ctx.keys.head_pk(sid), "device_id": dba.device_id},
        {"head_pk": b.ctx.keys.head_pk(sid), "device_id": dbb.device_id},
    ]
    behind = FileStore(str(tmp_path / "second"))

    async def joined_first(entry):  # (the other writer's write of that revision there first)
        if entry.pk == slot:
            await write_slot(behind, a, sid, entry.revision, writers)
        return await FileStore.set_head(a_second, entry)

    a_second.set_head = joined_first  # type: ignore[method-assign]
    try:
        with pytest.raises(ImportError_) as busy:
            await a.rekey(sid)
        assert busy.value.kind == "busy" and "next pull" in str(busy.value), busy.value
        _pending_unpublished(a, sid)
        assert a.ctx.keys.session_key(sid) == old

        _back(a_second)
        await a.pull(sid)
        assert a.ctx.keys.rekey_pending(sid) is None and a.ctx.keys.session_key(sid) != old
        first, second = await _heads(tmp_path, slot)
        assert first == second, (first, second)
        await b.pull(sid)
        await _exchanging(sid, (dba, a), (dbb, b))
    finally:
        await _closed(dba, a, dbb, b)


def _read_only(store: FileStore) -> None:
    """`store` refusing every write as a gateway does (ReadOnlyStore), though it does not say so beforehand."""

    async def refused(*args, **kw):
        raise ReadOnlyStore(f"{store.url} is a read-only gateway (test)")

    for name in ("put", "put_many", "set_head"):
        setattr(store, name, refused)


async def test_a_rekey_resumed_on_a_mirror_leaves_out_a_store_that_takes_no_writes(tmp_path):
    """A is killed between its two stores' writes of its notice; restarted, the second store of its mirror refuses
    writes as a gateway does (its health fresh: nothing written to it since the start). The resume writes its notice
    again to the store that takes writes and finishes, the other left out as the mirror leaves it out of every write
    (was: the refusal counted as a store down, and every pull's resume failed on it)."""
    sid, (dba, a, a_first, a_second), (dbb, b, _, _) = await _rekeying_pair(tmp_path)
    slot = await _slot_pk(dba, sid)
    old, (r0, _) = a.ctx.keys.session_key(sid), await _heads(tmp_path, slot)
    _killed_between(a_first, a_second, slot)
    with pytest.raises(_Killed):
        await a.rekey(sid)
    await a.stop()
    first, second = FileStore(str(tmp_path / "first")), FileStore(str(tmp_path / "second"))
    _read_only(second)
    mirror = MirrorStore([first, second], dba.outbox)
    a = Syncer(dba, mirror, str(tmp_path / "keys-a"), timeout=10, interval=3600.0, poll_interval=3600.0)
    try:
        await mirror.started()
        await a.start()
        await a.pull(sid)  # (its resume)
        assert a.ctx.keys.rekey_pending(sid) is None and a.ctx.keys.session_key(sid) != old
        on_first, on_second = await _heads(tmp_path, slot)
        assert on_first.revision == r0.revision + 2 and on_second == r0
        await b.pull(sid)
        assert b.ctx.keys.session_key(sid) == a.ctx.keys.session_key(sid)
    finally:
        await _closed(dba, a, dbb, b)


async def test_a_rekey_killed_once_every_store_took_its_notice_does_not_take_a_dropped_writers_over_it(
    tmp_path, monkeypatch
):
    """A's rekey drops B; every store of the mirror takes A's notice and A is killed before its record notes it
    published (`rekey:notice_set`). B, dropped, holds the old slot's key: it writes the slot one revision on with a
    notice of its own, boxed to A and claimed in its head, on one store of the two (on both it failed alike). A's
    resume must finish its own rekey (was: on a mirror only `p` counted, so the notice every store had taken was
    taken for a rekey that lost: A gave its rekey up and its pull took B's notice, rekeyed into the generation of the
    writer it had dropped)."""
    import os

    from sessiond.sync import rekey as rekey_module
    from sessiond.sync import rekeynotice
    from test_rekey_forgery import _forge

    sid, (dba, a, _, _), (dbb, b, _, _) = await _rekeying_pair(tmp_path)
    old = a.ctx.keys.session_key(sid)

    def killed(name: str) -> None:
        if name == "rekey:notice_set":
            raise _Killed(name)

    try:
        for module in (rekey_module, rekeynotice):
            monkeypatch.setattr(module, "crash_point", killed)
        with pytest.raises(_Killed):
            await a.rekey(sid, drop=[dbb.device_id])
        for module in (rekey_module, rekeynotice):
            monkeypatch.setattr(module, "crash_point", lambda _name: None)
        raw = a.ctx.keys.rekey_pending(sid)
        assert raw is not None and a.ctx.keys.session_key(sid) == old
        mine = bytes(dagcbor.decode(raw)["k"])
        slot = await _slot_pk(dba, sid)
        first, second = await _heads(tmp_path, slot)
        assert first == second and first is not None  # (every store took A's notice)
        home = tmp_path / "forger"  # (B's keys, as the forger's home holds them)
        home.mkdir()
        os.symlink(tmp_path / "keys-b", home / "keys")
        forged = await _forge(str(tmp_path / "first"), str(home), sid, dbb.device_id, claim=True)
        for _ in range(2):  # (A's resume at its pull, then the slot read again)
            with contextlib.suppress(ImportError_):
                await a.pull(sid)
        assert a.ctx.keys.session_key(sid) != forged  # main: B's key
        assert a.ctx.keys.session_key(sid) == mine and a.ctx.keys.rekey_pending(sid) is None
    finally:
        await _closed(dba, a, dbb, b)


async def test_a_published_rekey_is_finished_by_its_resume_with_a_store_of_the_mirror_down(tmp_path, monkeypatch):
    """A is killed once every store took its notice and its record noted it published (`rekey:published`), before
    it switched; B takes the new key and writes. A restarts with the second store away: its resume needs no store
    but one to finish (the notice is on every store; nothing is written to the old slot), so its pull finishes the
    rekey and brings in B's writes (was: the resume read the slot from every store, and every pull of the session
    failed `store` until the second store came back, A on the old key, reading nothing B wrote)."""
    from sessiond.sync import rekey as rekey_module

    sid, (dba, a, _, a_second), (dbb, b, _, _) = await _rekeying_pair(tmp_path)

    def killed(name: str) -> None:
        if name == "rekey:published":
            raise _Killed(name)

    try:
        monkeypatch.setattr(rekey_module, "crash_point", killed)
        with pytest.raises(_Killed):
            await a.rekey(sid)
        monkeypatch.setattr(rekey_module, "crash_point", lambda _name: None)
        raw = a.ctx.keys.rekey_pending(sid)
        assert raw is not None and dagcbor.decode(raw).get("p")
        mine = bytes(dagcbor.decode(raw)["k"])
        await b.pull(sid)
        assert b.ctx.keys.session_key(sid) == mine
        await dbb.append_messages(sid, [{"role": "user", "content": "b on the new key"}])
        await b.push(sid)

        _away(a_second)
        await a.pull(sid)  # (its resume, then the pull on the new key)
        assert a.ctx.keys.session_key(sid) == mine and a.ctx.keys.rekey_pending(sid) is None
        await a.pull(sid)
        assert "b on the new key" in await _texts(dba, sid)
    finally:
        _back(a_second)
        await _closed(dba, a, dbb, b)


async def _joining(tmp_path, a: Syncer, sid: str, writers: list[dict]):
    """C's write of the slot (listing `writers`) to the second store alone at a revision, ranked below `data` (the
    notice's there: the mirror reads the notice): `joined(revision, data)`."""
    from sessiond.stores.cid import digest
    from sessiond.stores.registry import RegistryEntry
    from sessiond.sync.crypto import members_key
    from sessiond.sync.members import announce_key
    from sessiond.sync.membersobject import SALT_LEN, members_object, seal_members

    behind = FileStore(str(tmp_path / "second"))
    key, ws = a.ctx.keys.session_key(sid), a.ctx.keys.write_secret(sid)
    assert key is not None and ws is not None

    async def joined(revision: int, data: bytes) -> None:
        for _ in range(64):
            salt = os.urandom(SALT_LEN)
            ct = seal_members(sid, dagcbor.encode(members_object(sid, writers)), members_key(key, salt), len(writers))
            if b"\x1e" + digest(ct) + salt < data:
                break
        await behind.put(ct)
        await behind.set_head(RegistryEntry.create(announce_key(ws), revision, b"\x1e" + digest(ct) + salt))

    return joined


async def _kept_joiner(tmp_path, a: Syncer, b: Syncer, sid: str, c_pk: bytes, old_key: bytes, slot: bytes) -> None:
    """A's rekey finished, both stores holding one notice, which boxes C (and the new slot lists C); B on A's key."""
    assert a.ctx.keys.rekey_pending(sid) is None
    first, second = await _heads(tmp_path, slot)
    assert first == second, (first, second)
    old = await a.members.read_apart(FileStore(str(tmp_path / "first")), sid, old_key, slot[1:])  # (the old slot)
    assert old.notice is not None
    assert c_pk in {bytes(x["k"]) for x in old.notice["b"]}  # main: no box for C (A, B only)
    new = bytes((await a.ctx.db.remote(sid))["announce_pk"])
    assert c_pk in {bytes(m["head_pk"]) for m in a.members.last_known(sid, new) or []}
    await b.pull(sid)
    assert b.ctx.keys.session_key(sid) == a.ctx.keys.session_key(sid)


def _writers_and(dba: Database, a: Syncer, dbb: Database, b: Syncer, sid: str) -> tuple[bytes, list[dict]]:
    """C's head key (C a writer joining) and the writers C's write of the slot lists: A, B and C."""
    from nacl.signing import SigningKey

    c_pk = b"\xed" + bytes(SigningKey.generate().verify_key)
    return c_pk, [
        {"head_pk": a.ctx.keys.head_pk(sid), "device_id": dba.device_id},
        {"head_pk": b.ctx.keys.head_pk(sid), "device_id": dbb.device_id},
        {"head_pk": c_pk, "device_id": "device-c"},
    ]


@pytest.mark.parametrize("killed", [False, True])
async def test_a_writer_joining_on_one_store_at_the_notice_s_revision_is_kept(tmp_path, monkeypatch, killed):
    """C joins (its write of the slot lists A, B and C) on the second store at the revision A's notice is sent for, just
    before A's notice reaches it: the first store takes the notice, the second refuses it. A's notice ranks first of
    the two, and A wrote it again a revision on to both stores as it was: with no box for C, which its write of the slot
    had made a writer (was: left out of a rekey asked to drop no one, C took itself for revoked). The notice is made
    again with C boxed (the same keys), and the new slot lists C. `killed`: A killed once its record holds the notice
    made again, before it is out; its resume found the first one the highest, its own but not its record's: taken for
    another device's rekey that came first, the rekey given up and the claim withdrawn (a notice no device takes)."""
    from sessiond.sync import rekey as rekey_module

    sid, (dba, a, _, a_second), (dbb, b, _, _) = await _rekeying_pair(tmp_path)
    slot = await _slot_pk(dba, sid)
    c_pk, writers = _writers_and(dba, a, dbb, b, sid)
    old_key = a.ctx.keys.session_key(sid)
    assert old_key is not None
    joined, join = [], await _joining(tmp_path, a, sid, writers)

    async def joined_first(entry):  # (C's write of that revision there first; once)
        if entry.pk == slot and not joined:
            joined.append(entry.revision)
            await join(entry.revision, entry.data)
        return await FileStore.set_head(a_second, entry)

    a_second.set_head = joined_first  # type: ignore[method-assign]
    pending: list[str] = []

    def made_again(name: str) -> None:  # (the second record of the rekey: the notice made again)
        if name == "rekey:pending":
            pending.append(name)
            if len(pending) == 2 and killed:
                raise _Killed(name)

    monkeypatch.setattr(rekey_module, "crash_point", made_again)
    try:
        with pytest.raises(_Killed) if killed else contextlib.nullcontext():
            await a.rekey(sid)
        _back(a_second)
        if killed:
            await a.pull(sid)  # (its resume)
        await _kept_joiner(tmp_path, a, b, sid, c_pk, old_key, slot)
    finally:
        await _closed(dba, a, dbb, b)


@pytest.mark.parametrize("unshared, killed", [(False, False), (True, False), (False, True)])
async def test_a_rekey_killed_as_a_writer_joined_on_the_other_store_keeps_it_at_its_resume(
    tmp_path, monkeypatch, unshared, killed
):
    """As above, A killed as the second store refused its notice (C's write there first): A's resume found its notice
    the highest, on one store only, and wrote it again a revision on to both as it was, with no box for C.
    `unshared`: an `unshare` (every other writer dropped) boxes no writer that joined: C no more than B. `killed`: the
    resume killed once the record holds the notice made again, before it is out: the next resume goes on with it."""
    from sessiond.sync import rekeynotice

    sid, (dba, a, a_first, a_second), (dbb, b, _, _) = await _rekeying_pair(tmp_path)
    slot = await _slot_pk(dba, sid)
    c_pk, writers = _writers_and(dba, a, dbb, b, sid)
    old_key = a.ctx.keys.session_key(sid)
    assert old_key is not None
    join, took = await _joining(tmp_path, a, sid, writers), asyncio.Event()

    async def one(entry):
        await FileStore.set_head(a_first, entry)
        if entry.pk == slot:
            took.set()

    async def other(entry):
        if entry.pk == slot:
            await took.wait()
            await join(entry.revision, entry.data)
            raise _Killed("as the second store refused the notice")
        return await FileStore.set_head(a_second, entry)

    a_first.set_head, a_second.set_head = one, other  # type: ignore[method-assign]
    try:
        with pytest.raises(_Killed):
            await (a.unshare(sid, None) if unshared else a.rekey(sid))
        _back(a_first)
        _back(a_second)
        _pending_unpublished(a, sid)
        if killed:

            def put(name: str) -> None:
                if name == "rekey:notice_put":
                    raise _Killed(name)

            monkeypatch.setattr(rekeynotice, "crash_point", put)
            with pytest.raises(_Killed):
                await a.pull(sid)  # (its resume, cut short)
            monkeypatch.setattr(rekeynotice, "crash_point", lambda _name: None)
        await a.pull(sid)  # (its resume)
        if not unshared:
            await _kept_joiner(tmp_path, a, b, sid, c_pk, old_key, slot)
            return
        assert a.ctx.keys.rekey_pending(sid) is None and a.ctx.keys.session_key(sid) != old_key
        first, second = await _heads(tmp_path, slot)
        assert first == second, (first, second)
        notice = (await a.members.read_apart(FileStore(str(tmp_path / "first")), sid, old_key, slot[1:])).notice
        assert notice is not None and [bytes(x["k"]) for x in notice["b"]] == [a.ctx.keys.head_pk(sid)]
    finally:
        await _closed(dba, a, dbb, b)
