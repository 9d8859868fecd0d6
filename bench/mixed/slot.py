"""Print the members slot a home's keys for session SID open (the last generation it holds): its fields and, if it
holds a notice, the notice's fields and how many frozen logs its "f" names. Usage: STORE_DIR HOME SID"""

from __future__ import annotations

import asyncio
import os
import sys

from sessiond.stores.file import FileStore
from sessiond.sync import dagcbor
from sessiond.sync.crypto import members_key, open_unpadded
from sessiond.sync.keys import KeyStore
from sessiond.sync.members import announce_key


async def main(store_dir: str, home: str, sid: str) -> None:
    ks = KeyStore(os.path.join(home, "keys"))
    key, write = ks.session_key(sid), ks.write_secret(sid)
    store = FileStore(store_dir, create=False)
    entry = await store.get_head(b"\xed" + bytes(announce_key(write).verify_key))
    slot = dagcbor.decode(open_unpadded(await store.get(entry.data[1:33]), members_key(key, entry.data[33:])))
    print("slot rev", entry.revision, "fields", sorted(slot), "members", len(slot["m"]), "f", len(slot.get("f", [])))
    if "rekey" in slot:
        n = slot["rekey"]
        print("notice fields", sorted(n), "f", len(n.get("f", [])), "s", n.get("s"))


asyncio.run(main(*sys.argv[1:]))
