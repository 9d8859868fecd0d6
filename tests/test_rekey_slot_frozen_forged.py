"""A writer a rekey dropped adds no frozen log through the old members slot (docs/SECURITY.md, "only a device that
rekeys writes frozen logs"). The old slot, holding the notice, is signed by a key every writer of the old generation
holds, the dropped one too: it can write the slot one revision on, the notice as it was, with an "f" of its own (its
log frozen at a later revision of its head, so that what it wrote after the rekey froze it is kept). A kept device
that takes the notice afterwards must not note that list and carry it into the new generation: the notice names, in
its own "f", the frozen logs its rekey adds, covered by the hash its author claims (docs/FORMATS.md §6). Real daemons
over one file:// store; the forger is the dropped writer's keys used directly on the store, as a modified sessiond
would."""

from __future__ import annotations

import asyncio
import os

from conftest import write_config
from sessiond.stores.registry import RegistryEntry
from sessiond.sync import dagcbor
from sessiond.sync.crypto import members_key
from sessiond.sync.fetch import freeze_log
from sessiond.sync.keys import KeyStore
from sessiond.sync.members import announce_key
from sessiond.sync.membersobject import SALT_LEN, T_MEMBERS, parse_members, seal_small
from test_rekey_carried import _old_slot
from test_rekey_forgery import _device, _messages, _three_writers
from test_sync_races import _every_device_alike, _rekey_held_doing, _written_and_pulled


async def _forge_frozen(store_dir: str, home: str, sid: str, device: str) -> None:
    """With the old keys of the device of `home` (the dropped writer), write the old members slot one revision on,
    its object as read (the notice kept), with an "f" freezing its own log at its head now."""
    store, entry, slot = await _old_slot(store_dir, home, sid)
    assert "rekey" in slot and "f" not in slot  # the notice; its rekey's freezes are in it, not beside it
    ks = KeyStore(os.path.join(home, "keys"))
    old_key, old_write = ks.session_key(sid), ks.write_secret(sid)
    assert old_key is not None and old_write is not None
    member = {"head_pk": ks.head_pk(sid), "device_id": device}
    frozen = await freeze_log(store, sid, [old_key], member, timeout=10)
    assert frozen is not None
    named = {bytes(f["k"]): f["r"] for f in slot["rekey"]["f"]}
    assert frozen[0]["r"] > named[ks.head_pk(sid)]  # later than the rekey froze it: what it wrote since
    slot["f"] = [frozen[0]]
    salt = os.urandom(SALT_LEN)
    h = await store.put(seal_small(dagcbor.encode(slot), members_key(old_key, salt)))
    await store.set_head(RegistryEntry.create(announce_key(old_write), entry.revision + 1, b"\x1e" + h + salt))


def test_a_dropped_writer_adds_no_frozen_log_to_the_old_slot_holding_the_notice(make_daemon, store_dir):
    """A drops C; C writes while A's rekey is under way (its log frozen, the notice not out), which no kept device
    reads. C then writes the old slot with the notice and a frozen log of its own at its head past A's freeze. B,
    away meanwhile, takes the notice: it holds what A holds, without what C wrote past A's freeze, as does a device
    importing the session afterwards."""
    a, b, c, sid = _three_writers(make_daemon, store_dir)
    write_config(b.home, poll_interval=3600, sync_interval=3600)  # B does not pull while A rekeys nor after
    b.restart()
    c_id = _device(c)
    _rekey_held_doing(a, c, sid, "rekey.notice_put", lambda: _written_and_pulled(c, sid, "C after its freeze"))
    asyncio.run(_forge_frozen(store_dir, c.home, sid, c_id))
    b.client().sync(sid, wait=True, timeout=10)
    assert b.client().get_session(sid)["access"] == "write"
    assert "C after its freeze" not in _messages(b, sid)
    _every_device_alike(make_daemon, store_dir, a, b, sid)
    assert "C after its freeze" not in _messages(a, sid)


def test_a_members_object_holding_a_notice_reads_no_frozen_log_of_its_own():
    """parse_members: an "f" beside a notice is not read (no sessiond writes one there); one in a slot holding no
    notice is, and the notice's own "f" is the notice's, left to the device that takes it once its author claims it."""
    frozen = {"d": "dev", "k": b"\xed" + bytes(32), "r": 3, "h": bytes(32), "x": bytes(32)}
    plain = {"m": [], "s": "sid", "v": 1, "ty": T_MEMBERS, "f": [frozen]}
    assert parse_members(plain) == ([], None, [frozen])
    notice = {"a": bytes(32), "b": [], "d": "author", "t": 0, "f": [frozen]}
    assert parse_members({**plain, "rekey": notice}) == ([], notice, [])
