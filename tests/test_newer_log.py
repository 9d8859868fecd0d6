"""A log written by a newer sessiond (a format version past this one's) is refused as that: upgrade this
device, not the log "damaged" with advice to push it again or leave a store serving forged heads, which is
what a device said of a log in a format it did not know (as 2026-11-22's pages of version 1 read today)."""

from __future__ import annotations

import pytest

from sessiond.stores.registry import RegistryEntry
from sessiond.sync import dagcbor
from sessiond.sync.crypto import manifest_key, seal
from sessiond.sync.engine import _open_manifest, head_data
from sessiond.sync.share import ImportError_


async def test_a_manifest_of_a_newer_version_is_refused_as_newer(devices):
    sid, code = await devices.started_share("newer", write=False)
    a, b = devices.a, devices.b
    # A's head as a newer sessiond would write it: its manifest of version 2, sealed and signed with A's keys
    pk = a.keys.head_pk(sid)
    entry = await a.store.get_head(pk)
    key = a.keys.session_key(sid)
    h = entry.data[1:]
    m = dagcbor.decode(_open_manifest(await a.store.get(h), h, key, entry.pk, entry.revision))
    rev = entry.revision + 1
    ct, _ = seal(dagcbor.encode({**m, "v": 2}), manifest_key(key, entry.pk, rev), pad=False)
    await a.store.set_head(RegistryEntry.create(a.keys.head_key(sid), rev, head_data(await a.store.put(ct))))
    with pytest.raises(ImportError_) as refused:
        await b.import_code(code, None)
    said = f"{refused.value} {refused.value.fix}"
    assert refused.value.kind == "newer", said
    assert "newer sessiond" in said and "upgrade sessiond" in said, said
    assert "damaged" not in said and "forged" not in said, said
    assert await devices.dbb.session_ids() == []
