"""A pull's walk down an author's older manifests that found the claim of a rekey notice keeps that (table
`claims_walks`) until the notice is taken: a kill in between, and the restart takes it without walking again past
manifests the author's gc freed since. What it found is kept by the manifest the walk began at (the author's head
then), met again as the walk from the author's head now goes down. The author writing on meanwhile moves its head,
and its gc frees the manifest its head moved on from after its grace, the one the walk began at too: the walk from
the new head never read it (its prev link names it, the object gone), ended there, and refused the notice for good,
the very case the kept row is for. A manifest's prev link vouches for the manifest it names (the hash chain from
the signed head): naming the one a kept walk began at, the walk has met it."""

from __future__ import annotations

import contextlib
import os

import pytest
from blake3 import blake3

from devices import count_gets
from sessiond.stores import FileStore
from sessiond.stores.registry import RegistryEntry
from sessiond.sync import dagcbor, rekeywalk
from sessiond.sync.crypto import members_key
from sessiond.sync.errors import ImportError_
from sessiond.sync.manifest import CLAIMS_KEPT
from sessiond.sync.members import announce_key
from sessiond.sync.membersobject import SALT_LEN, members_object, seal_small
from sessiond.sync.rekeyproof import notice_hash, open_box
from test_rekey_claims_walk import (
    _abandoned_notice,
    _aged_out,
    _claims_pushed,
    _slot_served_with,
    never_claimed,
)
from test_rekey_claims_walk_kept import _reopened_b, _walks, authors_chain, found_then_cut_off


@pytest.mark.parametrize("walk", ["cut_short", "at_once"])
async def test_a_walk_found_is_kept_when_the_authors_head_moved_and_its_old_head_was_freed(devices, monkeypatch, walk):
    if walk == "cut_short":
        monkeypatch.setattr(rekeywalk, "WALK_SECONDS", 0.0)  # (one manifest a pull past the head's)
    out = 8 if walk == "cut_short" else 2
    a, b, sid, notice, new_key, claims = await _aged_out(devices, "walk moved", CLAIMS_KEPT + out)
    await _slot_served_with(devices, sid, notice)
    await found_then_cut_off(devices, monkeypatch, sid, 2 * (out + CLAIMS_KEPT))
    assert b.ctx.keys.session_key(sid) != new_key
    assert len(await _walks(devices.dbb)) == 1  # (what it found, kept)
    # A writes on: its head moves past the manifest B's walk began at
    await _claims_pushed(devices, sid, claims)
    store = FileStore(devices.store_path)
    chain = await authors_chain(store, a, sid, 4)
    await a.stop()
    b = await _reopened_b(devices)
    # A's gc since: every manifest its head moved on from freed, the one B's walk began at among them
    await store.free(chain[1:])
    for _ in range(2 * (out + CLAIMS_KEPT)):
        if b.ctx.keys.session_key(sid) == new_key:
            break
        with contextlib.suppress(ImportError_):
            await b.pull(sid)
    # main: the walk from A's new head ended at the manifest gone, and the notice was refused for good
    assert b.ctx.keys.session_key(sid) == new_key
    assert await _walks(devices.dbb) == []


async def _next_rekey_in(devices, sid: str, notice: dict) -> bytes:
    """The slot `notice` switches to written (revision 1, A and B its writers), holding the notice of a rekey after
    it, boxed to A and B: the chain of rekeys one longer. The key that later notice gives."""
    b = devices.b
    secret = open_box(notice, b.ctx.keys.head_pk(sid), b.ctx.keys.head_key(sid), sid)
    assert secret is not None
    key, slot_key = bytes(secret["k"]), announce_key(bytes(secret["w"]))
    later, later_key = await _abandoned_notice(devices, sid)
    members = [
        {"head_pk": devices.a.ctx.keys.head_pk(sid), "device_id": devices.a.ctx.db.device_id},
        {"head_pk": b.ctx.keys.head_pk(sid), "device_id": b.ctx.db.device_id},
    ]
    obj = {**members_object(sid, members), "rekey": later}
    salt = os.urandom(SALT_LEN)
    store = FileStore(devices.store_path)
    h = await store.put(seal_small(dagcbor.encode(obj), members_key(key, salt)))
    await store.set_head(RegistryEntry.create(slot_key, 1, b"\x1e" + h + salt))
    return later_key


async def test_a_walk_found_is_kept_when_a_later_rekey_comes_meanwhile(devices, monkeypatch):
    """What B's walk found is kept under the walk's id, a digest of the keys it opens under among the rest: the
    notice's new key and those of the rekeys after it that B can read (rekeyproof._later_keys). A rekey after it while
    B is away (or a read of one of those slots failing at the next pull: a slow store) made the id another, and the
    row kept was dropped as a walk left behind; walked again from A's head past manifests its gc freed since, the
    notice was refused for good."""
    out = 2
    a, b, sid, notice, new_key, _claims = await _aged_out(devices, "walk rekeyed on", CLAIMS_KEPT + out)
    await _slot_served_with(devices, sid, notice)
    assert await found_then_cut_off(devices, monkeypatch, sid, 1) == [True]
    assert b.ctx.keys.session_key(sid) != new_key
    assert len(await _walks(devices.dbb)) == 1
    later_key = await _next_rekey_in(devices, sid, notice)
    store = FileStore(devices.store_path)
    chain = await authors_chain(store, a, sid, 3)
    await a.stop()  # (its head stays)
    b = await _reopened_b(devices)
    await store.free(chain[1:])  # (freed by A's gc since)
    for _ in range(4):
        if b.ctx.keys.session_key(sid) in (new_key, later_key):
            break
        with contextlib.suppress(ImportError_):
            await b.pull(sid)
    # main: the walk's id another, its row dropped, walked again from A's head to the first manifest gone: refused
    assert b.ctx.keys.session_key(sid) in (new_key, later_key)


async def test_a_walk_found_kept_by_sessiond_0_37_0_is_taken_over(devices, monkeypatch):
    """A row 0.37.0 kept (its walk id a digest of the keys too): an upgrade does not walk again from the head."""
    out = 2
    a, b, sid, notice, new_key, _claims = await _aged_out(devices, "walk of 0.37.0", CLAIMS_KEPT + out)
    await _slot_served_with(devices, sid, notice)
    assert await found_then_cut_off(devices, monkeypatch, sid, 1) == [True]
    [(_sid, walk, cuts)] = await devices.dbb.c.committed.fetchall("SELECT session_id, walk, cuts FROM claims_walks")
    # the same row under the id 0.37.0 gave it: the keys it opened under (the notice's, no later one, B's own)
    keys = sorted({new_key, *b.ctx.keys.session_keys(sid)})
    url = (await b.ctx.store_for(sid)).url
    o = bytes(announce_key(a.ctx.keys.write_secret(sid)).verify_key)
    old = blake3(dagcbor.encode([url, a.ctx.keys.head_pk(sid), o, notice_hash(notice), notice["a"], keys])).digest()
    assert old != bytes(walk)
    await devices.dbb.c.write("UPDATE claims_walks SET walk=? WHERE session_id=?", (old, sid))
    store = FileStore(devices.store_path)
    chain = await authors_chain(store, a, sid, 3)
    await a.stop()
    b = await _reopened_b(devices)
    await store.free(chain[1:])
    with contextlib.suppress(ImportError_):
        await b.pull(sid)
    assert b.ctx.keys.session_key(sid) == new_key


async def test_a_walk_found_is_kept_through_a_walk_that_did_not_reach_it(devices, monkeypatch):
    """What B's walk found is kept until the notice is taken; a later walk from A's head that ended before it met the
    manifest the found walk began at (a manifest between missing for a while: a store catching up, one of a mirror
    behind, a host's backup put back) found nothing, and dropped the row as a walk done finding no claim: once the
    store held that manifest again, the walk went on past it to manifests A's gc had freed, and the notice was
    refused for good."""
    out = 2
    a, b, sid, notice, new_key, claims = await _aged_out(devices, "walk not reached", CLAIMS_KEPT + out)
    await _slot_served_with(devices, sid, notice)
    assert await found_then_cut_off(devices, monkeypatch, sid, 1) == [True]
    assert len(await _walks(devices.dbb)) == 1
    for _ in range(2):  # A writes on: its head two manifests past where B's walk began
        await _claims_pushed(devices, sid, claims)
    store = FileStore(devices.store_path)
    chain = await authors_chain(store, a, sid, 5)
    await a.stop()
    b = await _reopened_b(devices)
    await store.free(chain[2:])  # (freed by A's gc since: where B's walk began, and below)
    between = await store.get(chain[1])
    await store.free(chain[1:2])  # (missing for a while)
    with pytest.raises(ImportError_) as err:
        await b.pull(sid)
    assert err.value.kind == "rekey_unconfirmed", err.value
    assert await store.put(between) == chain[1]  # (the store caught up)
    with contextlib.suppress(ImportError_):
        await b.pull(sid)
    # main: the row dropped by the walk that ended at the manifest missing; walked again, refused for good
    assert b.ctx.keys.session_key(sid) == new_key


async def test_a_walk_that_cannot_reach_what_was_found_is_not_walked_again_at_every_pull(devices, monkeypatch):
    """What B's walk found is kept; A writes on and its gc frees the manifest the walk began at and the one after
    (its prev link naming it) too: the walk from A's head ends at the first manifest gone, short of it. It keeps the
    row (the manifest may be back: a store catching up) and cached nothing, so that every pull of the session, while
    A's head stood, walked again every manifest down from it to the one gone (up to WALK_SECONDS of the store's reads
    a pull, for each session so; a DB write each time too): a pull from the same head reads only whether the
    manifest gone is back."""
    out = 2
    a, b, sid, notice, new_key, claims = await _aged_out(devices, "walk unreachable", CLAIMS_KEPT + out)
    await _slot_served_with(devices, sid, notice)
    assert await found_then_cut_off(devices, monkeypatch, sid, 1) == [True]
    for _ in range(8):  # A writes on: its head eight manifests past where B's walk began
        await _claims_pushed(devices, sid, claims)
    store = FileStore(devices.store_path)
    chain = await authors_chain(store, a, sid, 12)
    await a.stop()
    b = await _reopened_b(devices)
    await store.free(chain[6:])  # (A's gc: where B's walk began, the one after it, and more)
    walked = await _refused_reading(b, sid, chain[1:6])
    assert b.ctx.keys.session_key(sid) != new_key
    assert len(await _walks(devices.dbb)) == 1  # (still kept: the manifests gone may be back)
    # main: [5, 5, 5], the same five manifests read again at every pull
    assert walked[0] == 5 and walked[1:] == [0, 0], walked


async def test_a_manifest_missing_for_a_while_at_the_first_walk_refuses_nothing_for_good(devices):
    """B's first walk down A's older manifests ends at one missing from the store (a store catching up, one of a
    mirror behind), short of A's claim: refused for now. The walk's end was kept as the chain's for A's head
    (_WALKED): once the store held that manifest again, every pull while A's head stood (a quiet author: for good,
    its gc freeing the rest meanwhile) refused the notice from memory without reading a manifest."""
    a, b, sid, notice, new_key, _claims = await _aged_out(devices, "walk missing at first", CLAIMS_KEPT + 2)
    await _slot_served_with(devices, sid, notice)
    store = FileStore(devices.store_path)
    chain = await authors_chain(store, a, sid, 3)
    await a.stop()  # (its head stays)
    between = await store.get(chain[1])
    await store.free(chain[1:2])  # (missing for a while)
    with pytest.raises(ImportError_) as err:
        await b.pull(sid)
    assert err.value.kind == "rekey_unconfirmed", err.value
    assert b.ctx.keys.session_key(sid) != new_key
    assert await store.put(between) == chain[1]  # (the store caught up)
    with contextlib.suppress(ImportError_):
        await b.pull(sid)
    # main: refused again from memory, the walk's end at the manifest missing taken for the chain's
    assert b.ctx.keys.session_key(sid) == new_key


async def test_a_manifest_back_between_the_walks_read_and_the_check_of_its_return_refuses_nothing_for_good(devices):
    """B's walk down A's older manifests ends at one the store misses (a store catching up), and the store holds it
    again by the time the walk asks whether it is back (_back, just after). That answer was taken for a manifest read
    but not taken (a newer sessiond's), the chain's end: the walk's end kept as the chain's, in memory and as a row
    found=False in the database, so that every pull after, a restart's too, refused the notice for good, the store
    serving every manifest by then."""
    from sessiond.stores.base import ObjectMissing

    a, b, sid, notice, new_key, _claims = await _aged_out(devices, "walk back meanwhile", CLAIMS_KEPT + 2)
    await _slot_served_with(devices, sid, notice)
    store = FileStore(devices.store_path)
    chain = await authors_chain(store, a, sid, 3)
    await a.stop()  # (its head stays)
    bstore = await b.ctx.store_for(sid)
    real = bstore.get
    missed: list[bytes] = []

    async def get(h, *args, **kw):
        if h == chain[1] and not missed:  # (missing at the walk's read, there at the next)
            missed.append(h)
            raise ObjectMissing(h)
        return await real(h, *args, **kw)

    bstore.get = get
    with pytest.raises(ImportError_) as err:
        await b.pull(sid)
    assert err.value.kind == "rekey_unconfirmed", err.value
    assert missed and b.ctx.keys.session_key(sid) != new_key
    with contextlib.suppress(ImportError_):
        await b.pull(sid)
    # main: refused again, the walk's end taken for the chain's (and kept so in the database)
    assert b.ctx.keys.session_key(sid) == new_key


async def test_a_walk_ended_at_a_manifest_it_reads_but_cannot_parse_is_not_walked_again_at_every_pull(
    devices, monkeypatch
):
    """What B's walk found is kept; A writes on, and the manifest between its head and where that walk began is one B
    reads but cannot take (a newer sessiond's, or its author's damaged within: a hash that matches). The walk ends
    there, short of the row, as at one missing (_SHORT), whose return (_back: the object there, its hash right) it
    found at every next pull: every pull walked again down to it, and wrote the row again."""
    from sessiond.sync import fetch
    from sessiond.sync.pages import LogError

    a, b, sid, notice, new_key, claims = await _aged_out(devices, "walk unparsed", CLAIMS_KEPT + 2)
    await _slot_served_with(devices, sid, notice)
    assert await found_then_cut_off(devices, monkeypatch, sid, 1) == [True]
    for _ in range(2):  # A writes on: its head two manifests past where B's walk began
        await _claims_pushed(devices, sid, claims)
    store = FileStore(devices.store_path)
    keys, pk = a.ctx.keys.session_keys(sid), a.ctx.keys.head_pk(sid)
    chain = [(at, h) async for at, h, _k, _m in fetch.walk_manifests(store, sid, keys, pk, "a", timeout=10, limit=3)]
    await a.stop()
    unread_rev, unread = chain[1]
    real = fetch.parse_manifest

    def parse(plain: bytes, *, sid: str, head_pk: bytes, rev: int):
        if head_pk == pk and rev == unread_rev:
            raise LogError("a field this sessiond does not know")
        return real(plain, sid=sid, head_pk=head_pk, rev=rev)

    monkeypatch.setattr(fetch, "parse_manifest", parse)
    walked = await _refused_reading(b, sid, [unread])
    assert b.ctx.keys.session_key(sid) != new_key
    assert len(await _walks(devices.dbb)) == 1  # (still kept)
    # main: [2, 2, 2], walked down to it (and asked whether it was back) at every pull
    assert walked[1:] == [0, 0], walked


async def _refused_reading(b, sid: str, manifests: list[bytes], pulls: int = 3) -> list[int]:
    """B's pulls of `sid`, each refusing the notice for now: how many reads of `manifests` each made."""
    walked = []
    for _ in range(pulls):
        gets = count_gets(await b.ctx.store_for(sid))
        with pytest.raises(ImportError_) as err:
            await b.pull(sid)
        assert err.value.kind == "rekey_unconfirmed", err.value
        walked.append(len([h for h in gets if h in manifests]))
    return walked


async def test_a_notice_refused_walks_only_what_is_new_when_its_authors_head_moves(devices, monkeypatch):
    """A walk's result was kept by the head it began at (rekeywalk._WALKED, in memory), and a walk that ended finding
    no claim kept nothing in the database: once the author pushed again (its head moved), the next pull walked its
    whole chain again from the new head, down to the first manifest its gc had freed (up to CLAIMS_WALK reads, in
    WALK_SECONDS slices a pull), for as long as the notice stood in the slot, and so after every restart. Where it
    ended is kept now, as a walk that found the claim is: a moved head is read down to where the last walk began,
    then on from where it ended (the manifest it could not read: back, or not)."""
    monkeypatch.setattr(rekeywalk, "WALK_SECONDS", 600.0)  # (whole in one pull, however loaded the machine)
    a, b, sid, claims = await never_claimed(devices, "walked on", CLAIMS_KEPT + 6)
    store = FileStore(devices.store_path)
    chain = await authors_chain(store, a, sid, CLAIMS_KEPT + 4)
    await store.free(chain[-1:])  # (A's gc: the walk ends at the first manifest gone)
    with pytest.raises(ImportError_) as err:
        await b.pull(sid)
    assert err.value.kind == "rekey_unconfirmed", err.value
    walked = []
    for restart in (False, True):
        for _ in range(2):  # A writes on: its head moves past where B's walk began
            await _claims_pushed(devices, sid, claims)
        if restart:
            b = await _reopened_b(devices)
        gets = count_gets(await b.ctx.store_for(sid))
        with pytest.raises(ImportError_) as err:
            await b.pull(sid)
        assert err.value.kind == "rekey_unconfirmed", err.value
        walked.append(len([h for h in gets if h in chain]))
        chain = await authors_chain(store, a, sid, 2) + chain
    # main: [CLAIMS_KEPT + 3, CLAIMS_KEPT + 5], walked again down to the manifest gone
    assert walked == [2, 2], walked  # (whether the one gone is back: the walk's read of it, and _back's)
