"""A frozen log's manifest gone from the store (deleted by hand, lost by a host, never pinned): every import of
the session failed on it (fetch_frozen), told to ask the dropped writer to mend its log, which it cannot (its
log as the rekey froze it is pinned by the members slot, not by its head), and nothing put it back. A writer of
the session that holds the frozen log's operations (it applied them) now builds it again from its database and
names it in the members slot in place of the lost one, at its next full pull (followfrozen.py); an import
meanwhile says what is missing and what to do. Shown in process over a folder store: A rekeys B out, the frozen
manifest is deleted, C's import fails saying so; A's pull puts the log back; C's import then holds what A
holds."""

from __future__ import annotations

import pytest

from sessiond.sync.errors import ImportError_


async def _texts(db, sid: str) -> list[tuple[str, str]]:
    return [(m["role"], m["content"]) for m in await db.list_messages(sid, limit=1000)]


async def test_a_lost_frozen_manifest_is_put_back_by_a_writer_that_holds_the_log(devices):
    a, b = await devices.open()
    await a.start()
    sid = await devices.shared("frozen lost", write=True)
    for text in ("B one", "B two"):
        await devices.dbb.append_messages(sid, [{"role": "assistant", "content": text}])
    await b.push(sid)
    assert (await a.sync_now(sid, wait=True, timeout=20))["complete"]
    assert ("assistant", "B two") in await _texts(devices.dba, sid)
    await a.rekey(sid, drop=[devices.dbb.device_id])  # B's log frozen, named in the new members slot
    await devices.dba.append_messages(sid, [{"role": "user", "content": "A after the rekey"}])
    assert (await a.sync_now(sid, wait=True, timeout=20))["complete"]
    remote = await devices.dba.remote(sid)
    store, key = a.ctx.store, a.ctx.keys.session_key(sid)
    _rev, _members, _notice, frozen = await a.members.read_slot(store, sid, key, bytes(remote["announce_pk"]))
    assert [f["d"] for f in frozen] == [devices.dbb.device_id]
    lost = bytes(frozen[0]["h"])
    code = (await a.share(sid, write=False, passphrase=None, expires_in=None))["code"]
    await store.free([lost])  # (deleted by hand)
    assert not await store.has(lost)

    dbc, c = await devices._device("c", None, {})
    with pytest.raises(ImportError_) as err:
        await c.import_code(code, None)
    said = str(err.value) + " " + str(err.value.fix)
    assert "froze" in said and lost.hex()[:16] in said and "sessiond sync" in said, said  # main: "damaged"
    assert await dbc.session_ids() == []  # (nothing of it imported)

    # what the error says: `sessiond sync --wait` on A (it took that log already, and read the slot's object
    # moments ago: no audit of its own is due) asks the store for it, finds it lost and puts the log back
    assert (await a.sync_now(sid, wait=True, timeout=20))["complete"]
    _rev, _members, _notice, again = await a.members.read_slot(store, sid, key, bytes(remote["announce_pk"]))
    assert len(again) == 1 and bytes(again[0]["h"]) != lost and await store.has(bytes(again[0]["h"]))
    await c.import_code(code, None)  # main: fails as before
    held = await _texts(devices.dba, sid)
    assert ("assistant", "B one") in held and ("user", "A after the rekey") in held
    assert await _texts(dbc, sid) == held
    assert (await c.verify(sid))["ok"], await c.verify(sid)
    assert (await a.verify(sid))["ok"]


def _frozen_in_slot(store_dir: str, home: str, sid: str) -> list[dict]:
    """The frozen logs the members slot of `sid` names, read from the folder store with the keys of `home`."""
    import asyncio
    import os

    from sessiond.stores.file import FileStore
    from sessiond.sync import dagcbor
    from sessiond.sync.keys import KeyStore
    from sessiond.sync.members import announce_key
    from sessiond.sync.membersobject import open_members, parse_members

    async def read() -> list[dict]:
        ks = KeyStore(os.path.join(home, "keys"))
        store = FileStore(store_dir, create=False)
        write, key = ks.write_secret(sid), ks.session_key(sid)
        assert write is not None and key is not None
        entry = await store.get_head(b"\xed" + bytes(announce_key(write).verify_key))
        assert entry is not None
        obj = dagcbor.decode(open_members(await store.get(bytes(entry.data[1:33])), [key], bytes(entry.data[33:])))
        return parse_members(obj)[2]

    return asyncio.run(read())


def test_a_restarted_writer_puts_back_a_lost_frozen_log_at_its_first_pull(make_daemon, store_dir):
    """Real daemons over a folder store: R rekeys D out (D's log frozen, K kept); the frozen manifest deleted
    by hand; a new device's import says what is missing; R restarted (its first full pull reads the frozen log,
    finds it gone and puts it back); the import then holds what R and K hold."""
    import asyncio

    from conftest import wait_for
    from sessiond.client import ApiError
    from sessiond.stores.file import FileStore
    from test_rekey_forgery import _device, _messages, _three_writers

    r, k, d, sid = _three_writers(make_daemon, store_dir)
    d.client().append(sid, "assistant", "D before the drop")
    d.client().sync(sid, wait=True, timeout=10)
    wait_for(lambda: r.client().sync(sid, wait=True, timeout=10) and "D before the drop" in _messages(r, sid))
    assert r.client().rekey(sid, drop=[_device(d)])["dropped"] == [_device(d)]
    wait_for(lambda: k.client().sync(sid, wait=True, timeout=10) and "D before the drop" in _messages(k, sid))
    code = r.client().share(sid)["code"]
    r.stop()  # (the writers stopped: a writer's full pull would put it back at once)
    k.stop()
    (frozen,) = _frozen_in_slot(store_dir, r.home, sid)
    lost = bytes(frozen["h"])
    asyncio.run(FileStore(store_dir, create=False).free([lost]))
    n = make_daemon("file://" + store_dir).start()
    with pytest.raises(ApiError) as err:
        n.client().import_code(code)
    assert "froze" in err.value.message and lost.hex()[:16] in err.value.message, err.value.message
    r.start()  # its first pull (a full one) reads the frozen log: lost, put back
    wait_for(lambda: _frozen_in_slot(store_dir, r.home, sid)[0]["h"] != lost, timeout=30)
    n.client().import_code(code)
    k.start()
    assert "D before the drop" in _messages(n, sid)
    assert _messages(n, sid) == _messages(r, sid) == _messages(k, sid)
    assert n.client().verify(sid)["ok"]
    for dev in (r, k, d, n):
        dev.stop()


def test_the_way_on_names_the_sessiond_that_puts_a_lost_frozen_log_back(tmp_path):
    """Devices on different versions share a session: a writer on a sessiond before 0.30.0 never puts a lost frozen
    log back (it has no sync/frozenrepair.py), and one upgraded from it puts back only a log it took whole as
    0.30.0 (frozen_taken, migration 27: what it took before is not noted). The import's error and doctor's fix told
    the user to run `sessiond sync --wait` on any writer that took the log: on such a writer it does nothing, and
    the user, waiting for the log to come back, is not told why it does not. Both say which sessiond puts it back."""
    from sessiond.daemon.doctor_fixes import pull_fix
    from sessiond.stores.file import FileStore
    from sessiond.sync.fetch import frozen_lost

    sid = "01m96f434kaaq6a6c9jwk58myx"
    frozen = {"d": "804978579f150553", "k": b"\xed" + bytes(32), "r": 2, "h": bytes(range(32)), "x": bytes(32)}
    err = frozen_lost(FileStore(str(tmp_path / "store")), sid, frozen)
    for said in (str(err), str(err.fix), pull_fix("frozen_lost", sid)):
        assert "running sessiond 0.30.0 or later" in said, said  # main: any writer, whatever its version
        assert "an earlier one does not put it back" in said, said
