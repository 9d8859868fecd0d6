"""The device that created a session, away through more rekeys by another device than it can check (past
rekeyproof.CHAIN_MAX), is told by its pull to import a new share code; imported, the code's logs hold the session's
creation only in its own log, which is in the store under the key from before the rekeys (it never took them): the
import was refused as `busy` ("the device that created it has not pushed its log under the code's key ... import the
code again once that device has synced"), and so was every import after it while its pulls stayed refused: a session
that never synced again. Its own log, as the store holds it under a key it holds, is the same session's creation."""

from __future__ import annotations

import pytest

from sessiond.sync import rekeyproof
from sessiond.sync.errors import ImportError_


async def test_the_creator_away_through_more_rekeys_than_it_follows_imports_a_new_code(devices, monkeypatch):
    monkeypatch.setattr(rekeyproof, "CHAIN_MAX", 3)
    a, b = await devices.open()
    await a.start()
    sid = await devices.shared("created by a", write=True)  # A created it; B a writer
    await devices.dba.append_messages(sid, [{"role": "user", "content": "a before"}])
    assert (await a.sync_now(sid, wait=True, timeout=30))["complete"]
    await a.stop()  # A away: nothing of it runs but what the test calls (no pull takes the rekeys one by one)
    await _rekeyed_by_b(devices, sid)  # A away through them all
    with pytest.raises(ImportError_) as err:
        await a.pull(sid)
    assert err.value.kind == "rekey_unconfirmed" and "share code" in str(err.value), str(err.value)

    code = (await b.share(sid, write=True, passphrase=None, expires_in=None))["code"]
    await devices.dba.syncstate.claims_walks.put(sid, b"w" * 32, b"\x80")  # (a walk of the generation it leaves)
    await a.import_code(code, None)  # (was: busy, and so at every import after it)
    assert await devices.dba.c.committed.fetchall("SELECT * FROM claims_walks") == []  # (gone with it)
    await a.pull(sid)
    assert a.ctx.keys.session_key(sid) == b.ctx.keys.session_key(sid)
    await devices.dba.append_messages(sid, [{"role": "user", "content": "a after"}])
    await a.pusher.push(sid, force=True)
    await b.pull(sid)
    want = [m["content"] for m in await devices.dba.list_messages(sid, limit=100)]
    assert [m["content"] for m in await devices.dbb.list_messages(sid, limit=100)] == want
    assert "a after" in want and "b after rekey 4" in want and "a before" in want


async def test_a_writer_rejoining_while_the_creator_is_gone_for_good_is_told_the_way_and_it_works(devices, monkeypatch):
    """C, a writer, away through more rekeys by B than it can check, imports a new code while A, which created the
    session, is gone for good (away since before the rekeys: its log, which holds the creation, under the old key).
    Refused as busy, "import the code again once that device has synced", which it never will: every import refused
    for good and nothing said of the way out. Now the refusal names it: B drops A (its log frozen into the new
    generation, the creation with it), and a code made after that imports on C."""
    monkeypatch.setattr(rekeyproof, "CHAIN_MAX", 3)
    a, b = await devices.open()
    dbc, c = await devices._device("c", None, {})
    await a.start()
    sid = await devices.shared("created by a", write=True)
    await c.import_code((await a.share(sid, write=True, passphrase=None, expires_in=None))["code"], None)
    await dbc.append_messages(sid, [{"role": "user", "content": "c before"}])
    await c.pusher.push(sid, force=True)
    assert (await a.sync_now(sid, wait=True, timeout=30))["complete"]
    await a.stop()  # A gone for good
    await _rekeyed_by_b(devices, sid)
    with pytest.raises(ImportError_) as err:
        await c.pull(sid)
    assert err.value.kind == "rekey_unconfirmed", str(err.value)

    with pytest.raises(ImportError_) as err:
        await c.import_code((await b.share(sid, write=True, passphrase=None, expires_in=None))["code"], None)
    a_id = devices.dba.device_id
    said = str(err.value)
    assert err.value.kind == "busy" and f"sessiond rekey {sid} --drop {a_id}`" in said, said  # (was: not said)
    res = await b.rekey(sid, [a_id])
    assert res["dropped"] == [a_id], res
    await c.import_code((await b.share(sid, write=True, passphrase=None, expires_in=None))["code"], None)
    await c.pull(sid)
    want = [m["content"] for m in await devices.dbb.list_messages(sid, limit=100)]
    assert [m["content"] for m in await dbc.list_messages(sid, limit=100)] == want
    assert "c before" in want and "b after rekey 4" in want


async def test_a_fresh_device_importing_while_the_creator_is_gone_for_good_is_told_the_way_and_it_works(devices):
    """D, a device new to the session, imports B's code after B's rekey while A, which created it, is gone for good
    (away since before the rekey: its log, which alone holds the creation, under the old key). Refused as `damaged`,
    "the shared logs lack its creation: `sessiond verify` ... on the device that created it": no log is damaged, and
    the device named never runs again. Now said as what it is, the creator's log not under the code's key, with the
    way out: B drops A (its log frozen into the new generation, the creation with it), and a code made after that
    imports on D."""
    a, b = await devices.open()
    dbd, d = await devices._device("d", None, {})
    await a.start()
    sid = await devices.shared("created by a", write=True)
    assert (await a.sync_now(sid, wait=True, timeout=30))["complete"]
    await a.stop()  # A gone for good
    await b.start()
    await b.pull(sid)
    await b.rekey(sid)
    await devices.dbb.append_messages(sid, [{"role": "user", "content": "b after the rekey"}])
    assert (await b.sync_now(sid, wait=True, timeout=30))["complete"]

    with pytest.raises(ImportError_) as err:
        await d.import_code((await b.share(sid, write=True, passphrase=None, expires_in=None))["code"], None)
    a_id = devices.dba.device_id
    said = str(err.value)
    # main: damaged, "`sessiond verify ... && sessiond sync --wait ...` on the device that created it"
    assert err.value.kind == "busy" and f"sessiond rekey {sid} --drop {a_id}`" in said, said
    assert "sync --wait" not in said and "took the rekey if it kept this device" not in said, said
    res = await b.rekey(sid, [a_id])
    assert res["dropped"] == [a_id], res
    await d.import_code((await b.share(sid, write=True, passphrase=None, expires_in=None))["code"], None)
    want = [m["content"] for m in await devices.dbb.list_messages(sid, limit=100)]
    assert [m["content"] for m in await dbd.list_messages(sid, limit=100)] == want
    assert "b after the rekey" in want


async def test_the_way_out_names_the_creator_among_writers_away(devices, monkeypatch):
    """As above, and D, another writer, away through the rekeys too (on holiday, not gone). The refusal named the way
    out as `sessiond rekey ID --drop DEVICE`, "one of A, D": which of them created the session it did not say, though
    the device refused holds the session and its creation; a user who dropped D left a writer that is merely away
    out (it then needs a new code), and C's import was refused as before. It names A now, and not D."""
    monkeypatch.setattr(rekeyproof, "CHAIN_MAX", 3)
    a, b = await devices.open()
    dbc, c = await devices._device("c", None, {})
    dbd, d = await devices._device("d", None, {})
    await a.start()
    sid = await devices.shared("created by a", write=True)
    for db, dev in ((dbc, c), (dbd, d)):
        await dev.import_code((await a.share(sid, write=True, passphrase=None, expires_in=None))["code"], None)
        await db.append_messages(sid, [{"role": "user", "content": f"{db.device_id} before"}])
        await dev.pusher.push(sid, force=True)
    assert (await a.sync_now(sid, wait=True, timeout=30))["complete"]
    await a.stop()  # A gone for good; D away
    await _rekeyed_by_b(devices, sid)
    with pytest.raises(ImportError_) as err:
        await c.import_code((await b.share(sid, write=True, passphrase=None, expires_in=None))["code"], None)
    said = str(err.value)
    assert err.value.kind == "busy", said
    # main: "`sessiond rekey ID --drop DEVICE`, one of A, D"
    assert f"--drop {devices.dba.device_id}`" in said and dbd.device_id not in said, said


async def _rekeyed_by_b(devices, sid: str) -> None:
    """B rekeys `sid` five times, writing after each, and pushes (the others away through them all)."""
    b = devices.b
    await b.start()
    await b.pull(sid)
    for i in range(5):
        await b.rekey(sid)
        await devices.dbb.append_messages(sid, [{"role": "user", "content": f"b after rekey {i}"}])
    assert (await b.sync_now(sid, wait=True, timeout=30))["complete"]
