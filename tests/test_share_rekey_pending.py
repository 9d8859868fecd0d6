"""A share code made while this device's own rekey of the session is not finished (its notice written to some stores of
a mirror, another down: the rekey waits on every store, the pushes do not) named the key the rekey replaces: the code
given out was revoked the moment the rekey finished, and a device importing it meanwhile was refused as `revoked`
(the notice on the store it read), or imported and was left out. A share first finishes that rekey, and is refused
(`store`, naming the store, the rekey not finished) while it cannot."""

from __future__ import annotations

import pytest

from sessiond.sync.errors import ImportError_
from test_members_mirror_apart_back import _away, _closed, _rekeying_pair, _slot_pk
from test_members_mirror_rekey import _back, _cut_short_between


async def test_a_share_waits_for_this_devices_rekey_to_finish(tmp_path):
    sid, (dba, a, a_first, a_second), (dbb, b, _, _) = await _rekeying_pair(tmp_path)
    slot = await _slot_pk(dba, sid)
    old = a.ctx.keys.session_key(sid)
    try:
        new = await _cut_short_between(a, sid, a_first, a_second, slot)
        issued = len(await a.issued_shares(sid))
        _away(a_second)
        with pytest.raises(ImportError_) as refused:  # main: shared, a code of the old key
            await a.share(sid, write=True, passphrase=None, expires_in=None)
        said = str(refused.value)
        assert refused.value.kind == "store" and a_second.url in said and "cannot share" in said, said
        assert "rekey is not finished" in said, said
        assert len(await a.issued_shares(sid)) == issued and a.ctx.keys.session_key(sid) == old

        _back(a_second)
        await a.share(sid, write=True, passphrase=None, expires_in=None)
        assert a.ctx.keys.session_key(sid) == new and a.ctx.keys.rekey_pending(sid) is None
        assert (await a.issued_shares(sid))[-1]["status"] == "active"
    finally:
        await _closed(dba, a, dbb, b)
