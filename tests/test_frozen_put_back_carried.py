"""A writer that did not itself put back a lost frozen manifest kept the lost entry in what it noted of the slot
(remotes.frozen: of two entries of one head at one revision, the first named is kept, and its own came first), though
it read the slot naming the log put back: the members slot lost then and written again from its copy (Members.restore)
named the lost manifest again, and every import failed on it until a writer put the log back once more. The entry a
slot names in place of a noted one of the same head and revision (only a put-back differs so) is now noted in its
place. In process over a folder store: A rekeys B out; the frozen manifest is lost, A puts it back; C reads the slot;
the slot is lost and C writes it again."""

from __future__ import annotations

import os

from sessiond.sync.frozenrepair import put_back
from sessiond.sync.members import announce_key
from test_frozen_lost import _texts
from test_frozen_put_back_race import frozen_with_two_writers


async def test_a_slot_written_again_by_a_writer_that_did_not_put_a_frozen_log_back_names_the_one_put_back(devices):
    a, c, dbc, sid, frozen, announce = await frozen_with_two_writers(devices, "frozen put back, slot lost")
    store = a.ctx.store
    lost = bytes(frozen[0]["h"])
    await store.free([lost])  # (deleted by hand)
    mine = (await put_back(a.ctx, a.members, sid, store, frozen))[lost]
    await a.stop()  # (A's polls would write the slot again first)

    ckey = c.ctx.keys.session_key(sid)
    assert [bytes(f["h"]) for f in (await c.members.read_slot(c.ctx.store, sid, ckey, announce))[3]] == [mine["h"]]
    ws = c.ctx.keys.write_secret(sid)
    assert ws is not None and bytes(announce_key(ws).verify_key) == announce
    os.remove(os.path.join(devices.store_path, "heads", "ed" + announce.hex()))  # the store lost the slot
    assert await c.members.restore(sid)  # written again from what C noted
    again = (await c.members.read_slot(c.ctx.store, sid, ckey, announce))[3]
    # main: the lost manifest's entry, and every import failing on it (frozen_lost)
    assert [bytes(f["h"]) for f in again] == [mine["h"]], (lost.hex(), again)
    dbn, n = await devices._device("n", None, {})
    await n.import_code((await c.share(sid, write=False, passphrase=None, expires_in=None))["code"], None)
    assert ("assistant", "B one") in await _texts(dbn, sid)
