"""A share made on a device that has not taken another device's rekey yet: the share pushes and pulls first
(sync_now), and that pull takes the rekey. The code was made of the key read before it (the old one) and of the
members slot and write secret read after it (the new ones): the device importing it was refused, `damaged`, "the
members list ... cannot be read: chunk 0 fails authentication", told the store served forged heads; a code of a
session key and a slot of one generation, always."""

from __future__ import annotations

from test_rekey_catchup_owed import b_writing


async def test_a_code_made_by_a_share_whose_sync_takes_a_rekey_imports(devices):
    a, b, sid = await b_writing(devices)
    await a.rekey(sid)  # B has not pulled it yet
    await devices.dba.append_messages(sid, [{"role": "user", "content": "a after the rekey"}])
    assert (await a.sync_now(sid, wait=True, timeout=30))["complete"]

    for write in (True, False):
        before = b.ctx.keys.session_key(sid)
        code = (await b.share(sid, write=write, passphrase=None, expires_in=None))["code"]
        dbc, c = await devices._device(f"c{int(write)}", None, {})
        await c.import_code(code, None)  # was: damaged (the old key, the new slot)
        assert "a after the rekey" in [m["content"] for m in await dbc.list_messages(sid, limit=100)]
        if write:
            assert b.ctx.keys.session_key(sid) != before  # (the share's sync took the rekey)
            await a.rekey(sid)  # (again, for the read-only code)
            await devices.dba.append_messages(sid, [{"role": "user", "content": "a after the second rekey"}])
            assert (await a.sync_now(sid, wait=True, timeout=30))["complete"]
