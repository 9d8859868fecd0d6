"""A members object's fields this sessiond does not know (a newer one's: docs/FORMATS.md §6 keeps "v": 1 as
fields are added, as the frozen logs "f" were) are kept when this sessiond writes the slot again. A sessiond
of 2026-12-02, which knew no frozen logs, dropped them when it joined a session (test_old_homes.py, the
frozen-23bc028 fixture): today's must not do the same to the next field added."""

from __future__ import annotations

import os

from sessiond.stores.registry import RegistryEntry
from sessiond.sync import dagcbor
from sessiond.sync.crypto import members_key
from sessiond.sync.members import announce_key
from sessiond.sync.membersobject import SALT_LEN, seal_small
from test_members_no_id import slot_object


async def test_a_newer_sessionds_field_of_the_members_object_is_kept_when_a_device_joins(devices):
    sid, code = await devices.started_share("future", write=True)
    a, b = devices.a, devices.b
    # the slot as a newer sessiond writes it: a field this one does not know, written by A's keys
    ctx = a.members.ctx
    obj = {**await slot_object(a, sid), "zz": {"said": "by a newer sessiond", "n": [1, 2]}}
    obj["m"] = [{**m, "role": "keeper"} for m in obj["m"]]  # (A's own entry: a field of a member too)
    remote = await ctx.db.remote(sid)
    store = await ctx.store_for(sid)
    salt = os.urandom(SALT_LEN)
    h = await store.put(seal_small(dagcbor.encode(obj), members_key(ctx.keys.session_key(sid), salt)))
    ak = announce_key(ctx.keys.write_secret(sid))
    await store.set_head(RegistryEntry.create(ak, remote["members_rev"] + 1, b"\x1e" + h + salt))
    await b.import_code(code, None)  # B joins: it writes the slot with itself added
    slot = await slot_object(b, sid)
    assert len(slot["m"]) == 2  # (B wrote it)
    assert slot["zz"] == {"said": "by a newer sessiond", "n": [1, 2]}, slot
    mine = [m for m in slot["m"] if m["k"] == a.keys.head_pk(sid)]
    assert mine == [{"d": devices.dba.device_id, "k": a.keys.head_pk(sid), "role": "keeper"}], slot["m"]
