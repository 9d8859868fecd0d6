"""A dropped writer lists a member of its own under the device id of the rekey's author (docs/SECURITY.md, "A
dropped writer and the devices that have not yet pulled"). The old members slot is signed with a key every writer of
the old generation holds: after A's rekey, a writer holding the old secrets writes that slot one revision on with a
notice of its own naming A as its author, boxed to B, and with a member of a head key of its own under A's device id,
whose log claims the forged notice. The check read the claims of every member under the author's id: the forged
claim counted as A's, the real A's claim of another notice did not count against it: B, away, took the forger's key
while A was cut short between its claim and its switch (killed after its notice; `a_switched`: A's log gone on under
the new key, which B cannot open, was refused already). A notice whose author the old slot lists under more than one
head key is refused (a head key is its device's seed's and the session's: one device, one key)."""

from __future__ import annotations

import contextlib
import os

import pytest
from nacl.public import SealedBox
from nacl.signing import SigningKey, VerifyKey

from sessiond.stores.registry import RegistryEntry
from sessiond.sync import dagcbor
from sessiond.sync.crypto import manifest_key, members_key, seal
from sessiond.sync.errors import ImportError_
from sessiond.sync.manifest import encode_manifest
from sessiond.sync.members import announce_key
from sessiond.sync.membersobject import SALT_LEN, members_object, seal_small
from sessiond.sync.rekeyproof import notice_hash


@pytest.mark.parametrize("a_switched", [True, False])
async def test_a_member_listed_under_the_authors_id_does_not_claim_for_it(devices, a_switched):
    """`a_switched`: A went on under its new key (its log no longer opens under B's keys); else A claimed its notice
    and was cut short before it switched (its log under the old key, claiming its own notice)."""
    a, b = await devices.open()
    await a.start()
    sid = await devices.shared("author twice", write=True)
    await b.pull(sid)
    key_b = b.ctx.keys.session_key(sid)
    old_key, old_write = a.ctx.keys.session_key(sid), a.ctx.keys.write_secret(sid)  # what a dropped writer holds
    a_id, a_pk, b_pk = a.ctx.db.device_id, a.ctx.keys.head_pk(sid), b.ctx.keys.head_pk(sid)
    store = await a.ctx.store_for(sid)
    if a_switched:
        await a.rekey(sid)
    else:  # A's claim of its own notice, pushed; its notice never reaches the slot, the forger's does
        own = {"a": os.urandom(32), "h": os.urandom(32), "o": bytes(announce_key(old_write).verify_key)}
        await devices.dba.save_sync_state(sid, rekey_claims=dagcbor.encode([own]))
        await a.pusher.push(sid, force=True)

    forged_key, forged_write = os.urandom(32), os.urandom(32)
    forged_announce = bytes(announce_key(forged_write).verify_key)
    secret = dagcbor.encode({"a": forged_announce, "k": forged_key, "w": forged_write})
    box = SealedBox(VerifyKey(b_pk[1:]).to_curve25519_public_key()).encrypt(secret)
    notice = {"a": forged_announce, "b": [{"k": b_pk, "x": box}], "d": a_id, "t": 1}
    slot_key = announce_key(old_write)
    old_announce = bytes(slot_key.verify_key)
    # the forger's own head, listed under A's id, claiming the forged notice
    x = SigningKey.generate()
    x_pk = b"\xed" + bytes(x.verify_key)
    claim = {"a": forged_announce, "h": notice_hash(notice), "o": old_announce}
    plain = encode_manifest(sid, a_id, 1, x_pk, 0, 0, [], None, [claim])
    ct, ref = seal(plain, manifest_key(old_key, x_pk, 1), pad=False)
    await store.put(ct)
    await store.set_head(RegistryEntry.create(x, 1, b"\x1e" + ref.hash))
    entry = await store.get_head(b"\xed" + old_announce)
    assert entry is not None
    members = [
        {"head_pk": x_pk, "device_id": a_id},
        {"head_pk": a_pk, "device_id": a_id},
        {"head_pk": b_pk, "device_id": b.ctx.db.device_id},
    ]
    obj = {**members_object(sid, members), "rekey": notice}
    salt = os.urandom(SALT_LEN)
    h = await store.put(seal_small(dagcbor.encode(obj), members_key(old_key, salt)))
    await store.set_head(RegistryEntry.create(slot_key, entry.revision + 1, b"\x1e" + h + salt))

    with pytest.raises(ImportError_) as err:
        await b.pull(sid)
    assert err.value.kind in ("rekey_conflict", "rekey_unconfirmed"), err.value
    assert b.ctx.keys.session_key(sid) in (key_b, a.ctx.keys.session_key(sid))
    assert b.ctx.keys.session_key(sid) != forged_key


class _Killed(Exception):
    pass


async def _writers(devices, name: str):
    """A (started) and B, both writers of a session A shared: B listed in its members slot, A having read it."""
    a, b = await devices.open()
    await a.start()
    sid = await devices.shared(name, write=True)
    await devices.dbb.append_messages(sid, [{"role": "user", "content": "B writes"}])
    await b.pusher.push(sid)  # (B a writer: listed in the slot)
    await a.pull(sid)
    return a, b, sid


def _taken_then_killed(store, slot: bytes):
    """`store`'s set_head killing the rekey (_Killed) once the store took the write of `slot` (A's notice), before
    the answer reached it."""
    real_set_head = store.set_head

    async def taken_then_killed(entry, *args, **kw):
        await real_set_head(entry, *args, **kw)
        if entry.pk == slot:
            raise _Killed("set_head")

    return taken_then_killed


async def _three(devices, name: str):
    """A (started), B and C, writers of a session A shared (both listed in its slot, A having read it): (A, B, C's
    database, the session)."""
    a, b = await devices.open()
    await a.start()
    sid = await devices.shared(name, write=True)
    dbc, c = await devices._device("c", None, {})
    await c.import_code((await a.share(sid, write=True, passphrase=None, expires_in=None))["code"], None)
    for db, s in ((devices.dbb, b), (dbc, c)):  # (B and C writers: listed in the slot)
        await db.append_messages(sid, [{"role": "user", "content": "writes"}])
        await s.pusher.push(sid)
    await a.pull(sid)
    return a, b, dbc, sid


async def _forged_then_restarted(devices, keys: str, sid: str, author: str):
    """The device of keys folder `keys` forges a notice naming `author` over the old slot (claimed in its own head),
    then A, killed, restarts: (A, the forged key)."""
    from test_rekey_forgery import _forge

    home = os.path.join(devices.tmp, "forger")  # (the forger's keys, as its home holds them)
    os.makedirs(home)
    os.symlink(os.path.join(devices.tmp, keys), os.path.join(home, "keys"))
    forged = await _forge(devices.store_path, home, sid, author, claim=True)
    return await _restarted(devices), forged


async def _killed(devices) -> None:
    """A, killed: its loop stopped (it finishes no rekey before its restart) and its database closed."""
    await devices.a.stop()
    await devices.dba.close()
    devices.syncers.remove(devices.a)
    devices.dbs.remove(devices.dba)


async def _restarted(devices):
    """A opened again on the same files, and started (its restart)."""
    devices.dba, devices.a = await devices._device("a", None, {})
    await devices.a.start()
    return devices.a


@pytest.mark.parametrize("killed_at", ["rekey:published", "rekey:notice_set", "set_head"])
async def test_the_author_cut_short_after_its_notice_does_not_take_a_dropped_writers_in_its_place(
    devices, monkeypatch, killed_at
):
    """A's rekey drops B; A is killed once its notice is in the old slot, before it switches (its record says
    finish it). B, dropped, holds the old slot's key: it writes the slot one revision on with a notice of its own,
    boxed to A, and claims it in its own head. A's restart read the slot, found a notice other than its own, took
    that for another device's rekey that came first: it withdrew its claim and gave its rekey up, and its pull then
    took B's notice (no member claimed another of the slot any more), rekeyed by the writer it had dropped. A notice
    of its own published is its rekey's, whatever the slot holds since: no honest writer writes over one.
    `set_head`: killed as the store took the notice, before its record noted it published (`p`): the restart gave
    its rekey up all the same (it took B's notice for another device's rekey that came first); its record notes the
    revision its notice was sent for (`r`), and the slot past it is one written over its own. `rekey:notice_set`:
    killed once the store answered, before the slot's object was forgotten as a gc candidate: `p` is noted by then."""
    from sessiond.sync import rekey as rekey_module
    from sessiond.sync import rekeynotice

    a, b, sid = await _writers(devices, "replaced")
    old = a.ctx.keys.session_key(sid)

    def killed(name: str) -> None:
        if name == killed_at:
            raise _Killed(name)

    store = await a.ctx.store_for(sid)
    slot = b"\xed" + bytes((await devices.dba.remote(sid))["announce_pk"])
    real_set_head = store.set_head
    taken_then_killed = _taken_then_killed(store, slot)

    for module in (rekey_module, rekeynotice):
        monkeypatch.setattr(module, "crash_point", killed)
    if killed_at == "set_head":
        monkeypatch.setattr(store, "set_head", taken_then_killed)
    with pytest.raises(_Killed):
        await a.rekey(sid, drop=[devices.dbb.device_id])
    for module in (rekey_module, rekeynotice):
        monkeypatch.setattr(module, "crash_point", lambda _name: None)
    monkeypatch.setattr(store, "set_head", real_set_head)
    await _killed(devices)
    raw = a.ctx.keys.rekey_pending(sid)
    assert raw is not None and a.ctx.keys.session_key(sid) == old
    assert bool(dagcbor.decode(raw).get("p")) == (killed_at != "set_head")
    mine = bytes(dagcbor.decode(raw)["k"])
    a, forged = await _forged_then_restarted(devices, "kb", sid, devices.dbb.device_id)  # (B the forger)
    for _ in range(2):  # (the restart's pull: the rekey finished, then the slot read again)
        with contextlib.suppress(ImportError_):
            await a.pull(sid)
    # main: B's key, rekeyed into the generation of the writer A dropped
    assert a.ctx.keys.session_key(sid) != forged
    assert a.ctx.keys.session_key(sid) == mine
    assert a.ctx.keys.rekey_pending(sid) is None


@pytest.mark.parametrize("written_again", [False, True])
async def test_the_author_killed_as_its_notice_was_refused_gives_way_to_the_rekey_that_came_first(
    devices, monkeypatch, written_again
):
    """The bound of the above: A's record notes the revision its notice is sent for (`r`) before the store is asked;
    killed there, the store not taking it, while B's rekey took that revision first: A's restart finds B's notice at
    that revision, not past it, and gives its rekey up (B's came first: the pull takes it). `written_again`: B's
    notice written again one revision on before A restarts, as its author's retry writes it (its store took it and
    answered StaleHead), or a kept writer that took it with what it carried over (rekeycarried): the slot past `r`
    holding another notice, A's never in it, A must give way all the same (was: it finished its rekey, alone on a
    key no other device has: the session split for good); B is a writer A's rekey keeps, no dropped writer."""
    from sessiond.stores import FileStore
    from sessiond.sync.members import announce_key

    a, b, sid = await _writers(devices, "raced")
    await b.pull(sid)
    store = await a.ctx.store_for(sid)
    slot = b"\xed" + bytes((await devices.dba.remote(sid))["announce_pk"])
    old_write = a.ctx.keys.write_secret(sid)
    real_set_head = store.set_head

    async def killed_while_asked(entry, *args, **kw):
        if entry.pk == slot:  # (A's notice: the store asked, A killed before it answers; it does not take it)
            raise _Killed("set_head")
        return await real_set_head(entry, *args, **kw)

    monkeypatch.setattr(store, "set_head", killed_while_asked)
    with pytest.raises(_Killed):
        await a.rekey(sid)
    await _killed(devices)
    monkeypatch.setattr(store, "set_head", real_set_head)
    raw = a.ctx.keys.rekey_pending(sid)
    assert raw is not None and isinstance(dagcbor.decode(raw).get("r"), int)
    await b.rekey(sid)  # (the revision A's notice was sent for: B's)
    if written_again:  # (the same object one revision on, as its author's retry writes it)
        folder = FileStore(devices.store_path, create=False)
        took = await folder.get_head(slot)
        assert took is not None and took.revision == dagcbor.decode(raw)["r"]
        await folder.set_head(RegistryEntry.create(announce_key(old_write), took.revision + 1, took.data))
    a = await _restarted(devices)
    for _ in range(2):
        with contextlib.suppress(ImportError_):
            await a.pull(sid)
    assert a.ctx.keys.rekey_pending(sid) is None
    assert a.ctx.keys.session_key(sid) == b.ctx.keys.session_key(sid)


async def test_devices_that_took_a_notice_do_not_take_a_dropped_writers_written_over_it(devices, monkeypatch):
    """A's rekey drops C and keeps B; A is killed once its notice is published, before it switches, and B takes the
    notice meanwhile. Then C writes the old slot one revision on with a notice of its own boxed to A and B, and
    claims it. B, switched, no longer reads the old slot; A's restart finishes its own rekey (its record notes its
    notice published): both on the key A's rekey made. (Was: A switched before C wrote, so neither read the old slot
    again: the test passed with A's resume giving its rekey up to C's notice, which it then took, the session split
    between B on A's key and A on C's.)"""
    from sessiond.sync import rekey as rekey_module

    a, b, dbc, sid = await _three(devices, "taken, then replaced")
    await b.pull(sid)

    def killed(name: str) -> None:
        if name == "rekey:published":
            raise _Killed(name)

    monkeypatch.setattr(rekey_module, "crash_point", killed)
    with pytest.raises(_Killed):
        await a.rekey(sid, drop=[dbc.device_id])
    await _killed(devices)
    monkeypatch.setattr(rekey_module, "crash_point", lambda _name: None)
    raw = a.ctx.keys.rekey_pending(sid)
    assert raw is not None
    taken = bytes(dagcbor.decode(raw)["k"])
    with contextlib.suppress(ImportError_):  # (the new slot as B reads it is not this test's)
        await b.pull(sid)
    assert b.ctx.keys.session_key(sid) == taken  # (B took A's notice, A not switched yet)
    a, forged = await _forged_then_restarted(devices, "kc", sid, dbc.device_id)  # (C the forger)
    for s in (a, b, a):  # (A's restart: its rekey finished, then the slot read again)
        with contextlib.suppress(ImportError_):
            await s.pull(sid)
    # main: A gave its rekey up and took C's notice, B on A's key: split, A in the generation of the writer it dropped
    for s in (a, b):
        assert s.ctx.keys.session_key(sid) == taken != forged
    assert a.ctx.keys.rekey_pending(sid) is None


@pytest.mark.parametrize("b_took", [False, True])
async def test_the_author_killed_as_the_store_took_its_notice_checks_a_kept_writers_claim(devices, monkeypatch, b_took):
    """A's rekey keeps B and drops C; A is killed as the store took its notice, before its record noted it published
    (`r` noted, no `p`). C, dropped, writes the old slot one revision on with a notice of its own naming B, a writer
    A's rekey keeps, as its author. A's restart took any notice by a kept writer past `r` for that writer's rekey that
    came first (its notice written again a revision on), without the check a pull makes: it gave its rekey up for a
    notice B's log does not claim, which no device takes (the session jammed, A on the old key). The claim checked,
    C's notice is a forgery written over A's: A finishes its own rekey. `b_took`: B took A's notice before C wrote, its
    log gone on under A's new key (read under it: else taken for B gone on to a rekey of its own)."""

    a, b, dbc, sid = await _three(devices, "kept writer named")
    store = await a.ctx.store_for(sid)
    slot = b"\xed" + bytes((await devices.dba.remote(sid))["announce_pk"])
    real_set_head = store.set_head
    taken_then_killed = _taken_then_killed(store, slot)

    monkeypatch.setattr(store, "set_head", taken_then_killed)
    with pytest.raises(_Killed):
        await a.rekey(sid, drop=[dbc.device_id])
    monkeypatch.setattr(store, "set_head", real_set_head)
    await _killed(devices)
    raw = a.ctx.keys.rekey_pending(sid)
    assert raw is not None and not dagcbor.decode(raw).get("p")
    mine = bytes(dagcbor.decode(raw)["k"])
    if b_took:
        with contextlib.suppress(ImportError_):  # (the new slot as B reads it is not this test's)
            await b.pull(sid)
        assert b.ctx.keys.session_key(sid) == mine
    a, forged = await _forged_then_restarted(devices, "kc", sid, devices.dbb.device_id)  # (C the forger)
    for _ in range(2):  # (the restart's pull: the rekey finished, then the slot read again)
        with contextlib.suppress(ImportError_):
            await a.pull(sid)
    # main: A gave its rekey up (claim withdrawn), on the old key, the slot holding a notice no device takes
    assert a.ctx.keys.session_key(sid) == mine != forged
    assert a.ctx.keys.rekey_pending(sid) is None
