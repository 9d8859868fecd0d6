"""The members slot carried between a mirror's stores (sync/slotrestore.py) when one is a Kubo node.

Device A syncs through a mirror of a folder store and a Kubo node; device B through one of them alone. B writes
itself into the members slot on its store only: A, reading the newer revision through the mirror, carries B's very
entry, and the object it names, to the other store. To a Kubo node a head is an IPNS record that only the key's
holder can sign (the entry as read carries no key: A signs it with the announce key it derives from the write
secret); from a Kubo node, the entry is the one its record carries."""

from __future__ import annotations

import asyncio

import pytest

from conftest import wait_for
from servers.kubo import Node, make_rpc_app
from servers.s5portal import Threaded
from sessiond.stores import FileStore, Store
from sessiond.stores.cid import digest
from sessiond.stores.kubo import KuboStore
from test_members_mirror_apart import LOST, contents, joins, slot_pk, warnings


def slot_in(make_store, pk: bytes) -> tuple[int, bytes, bytes | None] | None:
    """(revision, data, the object it names or None if the store lacks it) of the members slot a store holds."""

    async def read():
        st: Store = make_store()
        try:
            entry = await st.get_head(pk)
            if entry is None:
                return None
            h = bytes(entry.data[1:33])
            obj = await st.get(h) if await st.has(h) else None
            return entry.revision, bytes(entry.data), obj
        finally:
            await st.close()

    return asyncio.run(read())


@pytest.mark.parametrize("b_on", ["folder", "kubo"])
def test_the_members_slot_is_carried_between_a_folder_store_and_a_kubo_node(make_daemon, store_dir, b_on):
    """`b_on`: the store B uses alone; the other is the one behind, which A carries B's slot to."""
    server = Threaded(make_rpc_app(Node())).start()
    try:
        folder, kubo = "file://" + store_dir, f"ipfs+http://127.0.0.1:{server.port}"
        stores = {"folder": lambda: FileStore(store_dir), "kubo": lambda: KuboStore(kubo)}
        behind = "kubo" if b_on == "folder" else "folder"
        a = make_daemon([folder, kubo]).start()
        b = make_daemon(folder if b_on == "folder" else kubo).start()
        ca = a.client()
        sid = ca.create_session(name="kubo apart")["id"]
        ca.append(sid, "user", "a1")
        code = ca.share(sid, write=True)["code"]
        assert ca.sync(sid, wait=True, timeout=30)["complete"]
        pk = slot_pk(a, sid)
        shared = slot_in(stores[behind], pk)
        assert shared is not None

        b_rev = joins(b, sid, code, "b1")  # b writes itself into the slot, on its store only
        assert b_rev > shared[0]
        written = slot_in(stores[b_on], pk)
        assert written is not None and written[0] == b_rev

        # a's follower, reading b's revision through the mirror, carries b's entry and its object to the other store
        def carried():
            got = slot_in(stores[behind], pk)
            return got is not None and got[0] == b_rev and got

        got = wait_for(carried, timeout=30, what=f"b's slot carried to the {behind} store")
        assert got[1] == written[1], "not b's very entry: a wrote a slot of its own"
        assert got[2] is not None and digest(got[2]) == got[1][1:33], "the object the carried entry names"
        wait_for(lambda: "b1" in contents(a, sid), timeout=30, what="a follows b")
        ca.append(sid, "user", "a2")
        assert ca.sync(sid, wait=True, timeout=30)["complete"]
        wait_for(lambda: "a2" in contents(b, sid), timeout=30, what="b follows a")
        assert ca.devices(sid)["members_rev"] == b_rev  # (carried, not written again past it)
        assert not [w for w in warnings(a) if LOST in w], warnings(a)
    finally:
        server.stop()
