"""A device catching up through a chain of rekeys leaves the push of its log to the chain's end (KeySwitch._switch_key);
a chain that stops short pays it (Rekeyer.settle). That owed push was kept in memory only: killed after a switch
that left it, then blocked for good at the next notice (one it can never take), the device never pushed its head
again after its restart, and its head stayed sealed under a key from before the switch. Its `status` said all pushed;
a device holding every earlier key (the rekeys' author) still read it, but one holding only the keys from the switch
on (joined after it) never did: it listed the device as "has not taken the session's latest rekey yet: its messages
arrive here once it has", for good, and its `verify` passed with that as a wait. The owed push is now derived from
what the database holds (the members slot the pushed head was sealed on, against the one the session is on)."""

from __future__ import annotations

import os

import pytest

from sessiond.stores import FileStore
from sessiond.sync.engine import Syncer
from sessiond.sync.errors import ImportError_
from sessiond.sync.heads import manifest_hash_of, open_manifest


class Killed(BaseException):
    """The daemon killed (kill -9): nothing of the process runs on, no `except Exception` of it sees this."""


async def _head_opens_under(syncer: Syncer, sid: str, key: bytes) -> bool:
    store = await syncer.ctx.store_for(sid)
    pk = syncer.ctx.keys.head_pk(sid)
    head = await store.get_head(pk)
    assert head is not None
    mhash = manifest_hash_of(head)
    try:
        open_manifest(await store.get(mhash), mhash, key, pk, head.revision)
    except Exception:
        return False
    return True


async def b_writing(devices) -> tuple[Syncer, Syncer, str]:
    """A (started) and B, writers of a shared session B wrote to, A knowing B: (a, b, session)."""
    a, b = await devices.open()
    await a.start()
    sid = await devices.shared("rekeyed twice", write=True)
    await devices.dbb.append_messages(sid, [{"role": "user", "content": "b joins"}])
    await b.pusher.push(sid)
    await a.pull(sid)  # (A knows B)
    return a, b, sid


async def rekeyed_twice_with_c(devices, a: Syncer, sid: str) -> Syncer:
    """A rekeys twice, B away, C joining with the first rekey's key (it never held the key B's head was first sealed
    under); A stopped after: C."""
    await a.rekey(sid)
    _dbc, c = await devices._device("c", None, {})
    await c.import_code((await a.share(sid, write=True, passphrase=None, expires_in=None))["code"], None)
    await c.pusher.push(sid)
    await a.pull(sid)
    await a.rekey(sid)
    assert (await a.sync_now(sid, wait=True, timeout=30))["complete"]
    await a.stop()
    return c


async def test_an_owed_push_survives_a_kill_when_the_chain_is_then_blocked_for_good(devices):
    a, b, sid = await b_writing(devices)
    c = await rekeyed_twice_with_c(devices, a, sid)

    taken: list[dict] = []
    confirm = b.rekeyer.check.confirm

    async def killed_at_the_second(sid_, notice, store, members):
        if taken:
            raise Killed  # after the first switch (its push left to the chain's end), before the next take
        taken.append(notice)
        return await confirm(sid_, notice, store, members)

    b.rekeyer.check.confirm = killed_at_the_second  # type: ignore[method-assign]
    with pytest.raises(Killed):
        await b.pull(sid)
    first = b.ctx.keys.session_key(sid)
    assert first is not None and first != a.ctx.keys.session_key(sid)  # between the two keys
    assert b.ctx.keys.rekey_pending(sid) is None  # the first switch done and forgotten
    assert not await _head_opens_under(b, sid, first)  # (its push left to the chain's end)

    # started again: the next notice is one this device can never take
    again = Syncer(devices.dbb, FileStore(devices.store_path), os.path.join(devices.tmp, "kb"), timeout=10)
    devices.syncers.append(again)

    async def never(sid_, notice, store, members):
        raise ImportError_("rekey_unconfirmed", "its author does not claim it")

    again.rekeyer.check.confirm = never  # type: ignore[method-assign]
    await pushed_as_owed(again, sid, first, c, "b joins")


async def pushed_as_owed(b: Syncer, sid: str, key: bytes, c: Syncer, text: str) -> None:
    """B's pulls refused at a notice it can never take: the push the switch left is made, B's head under the key it
    is on (`key`), which every device of that generation (and one importing with that key alone) reads; and C (on
    the last key, holding the keys from the first rekey on) reads B's `text`."""
    for _ in range(2):  # (every pull from now on is refused at that notice)
        with pytest.raises(ImportError_):
            await b.pull(sid)
    assert b.ctx.keys.session_key(sid) == key
    assert await _head_opens_under(b, sid, key)
    await c.pull(sid)
    assert text in [m["content"] for m in await c.db.list_messages(sid, limit=100)]
