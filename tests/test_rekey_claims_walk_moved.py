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

import pytest

from sessiond.stores import FileStore
from sessiond.sync import rekeyproof, rekeywalk
from sessiond.sync.errors import ImportError_
from sessiond.sync.fetch import walk_manifests
from sessiond.sync.manifest import CLAIMS_KEPT
from test_rekey_claims_walk import _aged_out, _claims_pushed, _slot_served_with
from test_rekey_claims_walk_kept import _pulled, _reopened_b, _walks


@pytest.mark.parametrize("walk", ["cut_short", "at_once"])
async def test_a_walk_found_is_kept_when_the_authors_head_moved_and_its_old_head_was_freed(devices, monkeypatch, walk):
    if walk == "cut_short":
        monkeypatch.setattr(rekeywalk, "WALK_SECONDS", 0.0)  # (one manifest a pull past the head's)
    out = 8 if walk == "cut_short" else 2
    a, b, sid, notice, new_key, claims = await _aged_out(devices, "walk moved", CLAIMS_KEPT + out)
    await _slot_served_with(devices, sid, notice)
    real = rekeyproof.claimed_before
    found: list[bool | None] = []

    async def cut_off_once_found(*args, **kw):
        res = await real(*args, **kw)
        found.append(res)
        if res and found.count(True) == 1:
            raise ImportError_("store", "(killed here: the walk ended, the notice not taken)")
        return res

    monkeypatch.setattr(rekeyproof, "claimed_before", cut_off_once_found)
    for _ in range(2 * (out + CLAIMS_KEPT)):
        if True in found:
            break
        await _pulled(b, sid)
    assert True in found and b.ctx.keys.session_key(sid) != new_key, found
    monkeypatch.setattr(rekeyproof, "claimed_before", real)
    assert len(await _walks(devices.dbb)) == 1  # (what it found, kept)
    # A writes on: its head moves past the manifest B's walk began at
    await _claims_pushed(devices, sid, claims)
    store = FileStore(devices.store_path)
    chain = [
        mhash
        async for _at, mhash, _k, _m in walk_manifests(
            store, sid, a.ctx.keys.session_keys(sid), a.ctx.keys.head_pk(sid), "a", timeout=10, limit=4
        )
    ]
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
