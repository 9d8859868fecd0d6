"""A relay stopped mid-write (kill -9, a power cut) starts again with its data folder consistent and
every account's quota exact: the states such a cut can leave (an atomic write's temporary file, an
upload's object written but not its pin, a head's charge written but not the head) are put right at
start. The relay is served on 127.0.0.1 and reached through the S5 store, as a device reaches it."""

from __future__ import annotations

import glob
import os

import pytest
from nacl.signing import SigningKey

from sessiond.relay.admin import list_accounts
from sessiond.relay.objects import HEAD_SIZE
from sessiond.stores.cid import digest
from sessiond.stores.errors import StoreFull
from sessiond.stores.registry import RegistryEntry
from test_relay import Served, store_for


def entry(key: SigningKey, revision: int = 1) -> RegistryEntry:
    return RegistryEntry.create(key, revision, b"\x1e" + bytes([revision]) * 47)


def write(path: str, data: bytes) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


async def test_what_a_cut_write_leaves_is_put_right_and_the_quota_stays_exact(tmp_path):
    data = str(tmp_path / "relay")
    blob = b"x" * 1000
    quota = len(blob) + 4 * HEAD_SIZE  # the object and four heads, exactly
    keys = [SigningKey(bytes([i]) * 32) for i in range(1, 6)]
    served = await Served(data, open_registration=True, quota=quota).start()
    store = store_for(served, tmp_path, seed=b"\x42" * 32)
    try:
        await store.put(blob)
        await store.set_head(entry(keys[0]))
    finally:
        await store.close()
        await served.stop()
    (account,) = os.listdir(os.path.join(data, "pins"))

    # what kill -9 can leave: temporary files of writes cut before their rename, in every folder
    temps = [
        os.path.join(data, "objects", "ab", ".tmp-ab12-0123456789ab"),
        os.path.join(data, "pins", account, f".tmp-{'cd' * 32}-0123456789ab"),
        os.path.join(data, "headpins", account, f".tmp-{'ef' * 33}-0123456789ab"),
        os.path.join(data, "heads", f".tmp-{'ef' * 33}-0123456789ab"),
        os.path.join(data, "tokens", ".tmp-0123-0123456789ab"),
    ]
    for path in temps:
        write(path, b"half")
    # an upload cut between its object and its pin: an object nobody pins (nobody was told it is kept)
    orphan = b"y" * 5000
    h = digest(orphan).hex()
    write(os.path.join(data, "objects", h[:2], h), orphan)
    # a head set cut between its charge and the head: the account paid for a head the relay lacks
    write(os.path.join(data, "headpins", account, keys[1].verify_key.encode().hex().join(["ed", ""])), b"256")

    # the same port: a device's account on a relay is per address
    served = await Served(data, open_registration=True, quota=quota).start(port=served.port)
    store = store_for(served, tmp_path, seed=b"\x42" * 32)
    try:
        assert [p for p in temps if os.path.exists(p)] == []
        assert not os.path.exists(os.path.join(data, "objects", h[:2], h))
        (acct,) = list_accounts(data)
        assert acct["used"] == len(blob) + HEAD_SIZE and acct["heads"] == 1  # as before the cut
        # the head whose set was cut is set again, and charged once: three more heads fit, not two
        for key in keys[1:4]:
            await store.set_head(entry(key))
        with pytest.raises(StoreFull):
            await store.set_head(entry(keys[4]))
        assert await store.get(digest(blob)) == blob
        # an object lost from under its pin (a damaged disk) and uploaded again is not charged twice
        b = digest(blob).hex()
        os.unlink(os.path.join(data, "objects", b[:2], b))
        await store.put(blob)
        assert served.relay.objects.used[account] == quota and await store.get(digest(blob)) == blob
    finally:
        await store.close()
        await served.stop()
    assert glob.glob(os.path.join(data, "**", ".tmp-*"), recursive=True) == []


async def test_a_folder_the_relay_makes_is_durable_before_what_it_holds_is_acknowledged(tmp_path, monkeypatch):
    """An object, a pin, a head, an account or a token is fsynced with its folder before the relay
    answers; the folders a put makes (objects/ab/, pins/ACCOUNT/) have their names fsynced in their
    parents, but the data folder and its own folders (objects/, pins/, heads/, accounts/, tokens/...),
    made at the relay's first start, did not: a power cut soon after could lose one, and with it what
    the devices had been told was kept."""
    from sessiond.storage import fsutil

    synced: list[str] = []
    real = fsutil.fsync_dir
    monkeypatch.setattr(fsutil, "fsync_dir", lambda path: (synced.append(os.path.abspath(path)), real(path))[1])
    data = str(tmp_path / "relay")
    served = await Served(data, open_registration=True).start()
    store = store_for(served, tmp_path)
    try:
        for folder in ("", "objects", "pins", "headpins", "heads", "accounts", "tokens", "invites"):
            made = os.path.join(data, folder).rstrip("/")  # made at start: its name synced in its parent
            assert os.path.dirname(made) in synced, made
        synced.clear()
        await store.put(b"the first object of its shard and of its account")
        await store.set_head(entry(SigningKey(b"\x09" * 32)))
        (account,) = os.listdir(os.path.join(data, "pins"))
        h = digest(b"the first object of its shard and of its account").hex()
        for made in (
            os.path.join(data, "objects", h[:2]),
            os.path.join(data, "pins", account),
            os.path.join(data, "headpins", account),
        ):
            assert os.path.dirname(made) in synced, made
    finally:
        await store.close()
        await served.stop()
