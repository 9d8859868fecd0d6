"""A device away through a chain of rekeys pushes its log once, under the last key, as it catches up.

It takes the notices one at a time (sync/follower.py: a pull per generation), and each switch to a new key pushed
its log under that key (KeySwitch._switch_key): k pushes for k rekeys behind, each a manifest and a head written, of
which all but the last were written over by the next switch's push and left to gc (12 behind: ~50 s of "catching
up" on a loaded machine). Now a switch to a members slot that already holds the next notice leaves the push to the
switch at the chain's end; what the device wrote while away still reaches the others, under the last key."""

from __future__ import annotations

import pytest

from devices import count_calls
from sessiond.sync.errors import ImportError_

REKEYS = 5


async def test_a_device_five_rekeys_behind_pushes_its_log_once_as_it_catches_up(devices):
    pushed: list[dict] = []
    a, b = await devices.open(b={"on_event": lambda ev: ev["type"] == "sync.pushed" and pushed.append(ev)})
    await a.start()
    sid = await devices.shared("rekeyed often", write=True)
    await devices.dbb.append_messages(sid, [{"role": "user", "content": "from b"}])  # (B away: not pushed)
    for i in range(REKEYS):
        await a.rekey(sid)
        await devices.dba.append_messages(sid, [{"role": "user", "content": f"after rekey {i}"}])
    assert (await a.sync_now(sid, wait=True, timeout=30))["complete"]
    await a.stop()
    pushed.clear()
    pushes = count_calls(b.pusher, "push")
    await b.pull(sid)
    assert b.ctx.keys.session_key(sid) == a.ctx.keys.session_key(sid)  # every notice taken, in this one pull
    got = [m["content"] for m in await devices.dbb.list_messages(sid, limit=1000)]
    assert [t for t in got if t.startswith("after rekey")] == [f"after rekey {i}" for i in range(REKEYS)]
    # one push, under the last key (was: one per rekey, 5 here), of one revision: the operations B wrote while away
    # in it (was: that revision and a second, forced, naming the same, a manifest and a head more)
    assert len(pushes) == 1, pushes
    assert [ev["seq"] for ev in pushed] == [await devices.dbb.last_seq(sid)], pushed
    # and what B wrote while away reaches A, on the last key
    await a.pull(sid)
    assert "from b" in [m["content"] for m in await devices.dba.list_messages(sid, limit=1000)]


async def test_a_device_dropped_by_the_last_rekey_of_the_chain_is_shut_out_as_before(devices):
    """Away through two rekeys that kept it and a third that dropped it: the check of the first notice follows the
    chain to its end (rekeyproof), which leaves it out, so it takes none of them and is told so; it pushes nothing,
    as before (its log stays under the key it held, which the writers the rekeys kept no longer read)."""
    pushed: list[dict] = []
    a, b = await devices.open(b={"on_event": lambda ev: ev["type"] == "sync.pushed" and pushed.append(ev)})
    await a.start()
    sid = await devices.shared("rekeyed often", write=True)
    await devices.dbb.append_messages(sid, [{"role": "user", "content": "b joins"}])
    await b.pusher.push(sid)
    await a.pull(sid)  # (A knows B by its device id)
    held = b.ctx.keys.session_key(sid)
    await devices.dbb.append_messages(sid, [{"role": "user", "content": "from b"}])  # (B away: not pushed)
    for i in range(2):
        await a.rekey(sid)
        await devices.dba.append_messages(sid, [{"role": "user", "content": f"after rekey {i}"}])
    assert (await a.rekey(sid, drop=[devices.dbb.device_id]))["dropped"] == [devices.dbb.device_id]
    assert (await a.sync_now(sid, wait=True, timeout=30))["complete"]
    await a.stop()
    pushed.clear()
    pushes = count_calls(b.pusher, "push")
    with pytest.raises(ImportError_) as left:
        await b.pull(sid)
    assert left.value.kind == "revoked" and "held here only" in str(left.value), left.value
    assert (await devices.dbb.get_session(sid))["access"] == "revoked"
    assert b.ctx.keys.session_key(sid) == held  # no key of the chain taken
    got = [m["content"] for m in await devices.dbb.list_messages(sid, limit=1000)]
    assert not [t for t in got if t.startswith("after rekey")], got
    assert not pushes and not pushed, (pushes, pushed)
