"""The push a rekey chain's catch-up leaves to its end is derived after a restart from sync_state.head_announce (the
members slot the pushed head was sealed on): NULL says "not known", nothing owed. A push that finds its recorded
revision published already under a key from before a rekey (killed after its head, before its mark, while the key
switched) marks it pushed with head_announce NULL and only then publishes a new head under the current key, in the
same push. Killed between the two (the owed push, paid at a chain blocked for good), the device started again owed
nothing: its head stayed sealed under the old key for good, which a device holding only the keys from the rekey on
(one that joined after it) never opens, while `status` said all pushed."""

from __future__ import annotations

import os

import pytest

from sessiond.stores import FileStore
from sessiond.sync.engine import Syncer
from sessiond.sync.errors import ImportError_
from test_rekey_catchup_owed import Killed, _head_opens_under, b_writing, pushed_as_owed, rekeyed_twice_with_c


async def test_a_kill_after_a_head_found_under_an_older_key_is_marked_leaves_the_push_owed(devices):
    a, b, sid = await b_writing(devices)

    # B's push of a message under the first key publishes its head, killed before its pushed mark
    real_save = devices.dbb.save_pushed

    async def killed_at_the_mark(sid_, *args, **kw):
        if "pushed_seq" in kw:
            raise Killed
        return await real_save(sid_, *args, **kw)

    devices.dbb.save_pushed = killed_at_the_mark  # type: ignore[method-assign]
    await devices.dbb.append_messages(sid, [{"role": "user", "content": "under the first key"}])
    with pytest.raises(Killed):
        await b.pusher.push(sid)
    first_key = b.ctx.keys.session_key(sid)
    assert (await devices.dbb.sync_state(sid))["pending"]  # (the revision recorded, its head out, not marked)

    # two rekeys by A; C joins with the first one's key (it never held the key B's head is sealed under)
    c = await rekeyed_twice_with_c(devices, a, sid)

    # B started again: it takes the first notice (its push left to the chain's end), the second it can never take,
    # so the owed push is paid; it finds its recorded revision published under the first key, marks it so, and is
    # killed before the new head under the key it is on
    taken: list[dict] = []  # (the first notice: the one B takes, in each process)

    def restarted() -> Syncer:
        s = Syncer(devices.dbb, FileStore(devices.store_path), os.path.join(devices.tmp, "kb"), timeout=10)
        devices.syncers.append(s)
        confirm = s.rekeyer.check.confirm

        async def the_first_only(sid_, notice, store, members):
            if taken and notice != taken[0]:
                raise ImportError_("rekey_unconfirmed", "its author does not claim it")
            taken.append(notice)
            return await confirm(sid_, notice, store, members)

        s.rekeyer.check.confirm = the_first_only  # type: ignore[method-assign]
        return s

    async def killed_after_the_older_mark(sid_, *args, **kw):
        await real_save(sid_, *args, **kw)
        if "pushed_seq" in kw and not kw.get("head_announce"):  # (the older key's head, marked)
            raise Killed

    devices.dbb.save_pushed = killed_after_the_older_mark  # type: ignore[method-assign]
    again = restarted()
    with pytest.raises(Killed):
        await again.pull(sid)
    on = again.ctx.keys.session_key(sid)
    assert on is not None and on != first_key and on != a.ctx.keys.session_key(sid)  # between the two keys
    assert not (await devices.dbb.sync_state(sid))["pending"]  # (marked pushed)
    assert not await _head_opens_under(again, sid, on)  # (still the first key's head)

    # started once more: the push is still owed, and made
    devices.dbb.save_pushed = real_save  # type: ignore[method-assign]
    await pushed_as_owed(restarted(), sid, on, c, "under the first key")
