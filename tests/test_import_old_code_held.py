"""A share code made before a rekey, imported again on a device that took the rekey (its author, or a writer it
kept): the session is here already, under the rekey's key. The rekey's author was told the notice's author ("the
device it names as its author (THIS DEVICE) does not claim it ... go on in a new session: `sessiond fork ...`"):
the notice was checked as one leaving this device out, and this device, its author, is no other member. Each is
told the code was revoked by the rekey and that the session is here, nothing imported nor changed."""

from __future__ import annotations

import pytest

from sessiond.sync.errors import ImportError_


async def test_a_code_from_before_a_rekey_is_revoked_on_the_devices_that_took_it(devices):
    await devices.open()
    a, b = devices.a, devices.b
    await a.start()
    sid = await devices.shared("rekeyed", write=True)
    old = (await a.share(sid, write=True, passphrase=None, expires_in=None))["code"]
    await a.rekey(sid)
    await b.pull(sid)
    assert b.keys.session_key(sid) == a.keys.session_key(sid)  # (B took the rekey: kept, on its key)
    for device, db in ((a, devices.dba), (b, devices.dbb)):
        before = await db.list_messages(sid, limit=100)
        with pytest.raises(ImportError_) as refused:
            await device.import_code(old, None)
        said = str(refused.value)
        assert refused.value.kind == "revoked", said
        assert f"session {sid} was rekeyed after it was made" in said and "holds the session" in said, said
        assert "fork" not in said and "does not claim" not in said, said
        assert await db.list_messages(sid, limit=100) == before
