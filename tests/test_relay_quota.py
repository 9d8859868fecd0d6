"""The relay's quota (`sessiond serve --quota`) counts heads too: a head an account creates takes
HEAD_SIZE bytes of it, so an account refused objects (507, full) cannot go on storing heads of fresh
keys without end; moving a head the relay already holds is free, so a full device still moves the heads
it has. A real `sessiond serve` process on loopback, reached through the S5 store."""

from __future__ import annotations

import base64
import os

import pytest
from nacl.signing import SigningKey

from conftest import relay_served, run_cli
from sessiond.stores.errors import StoreFull, describe_failure, failure_kind
from sessiond.stores.http import RetryPolicy
from sessiond.stores.registry import RegistryEntry
from sessiond.stores.s5 import S5Store

HEAD_SIZE = 256  # what a head counts (README, docs/SECURITY.md)
FAST = RetryPolicy(attempts=2, backoff=0.01, max_backoff=0.05)


def invite(data: str) -> str:
    return run_cli(None, "serve", "invite", "--data", data, check=True).stdout.strip()


def device(info: dict, data: str, tmp_path, seed: int) -> S5Store:
    return S5Store(
        f"s5+http://{invite(data)}@127.0.0.1:{info['port']}",
        account_seed=bytes([seed]) * 32,
        token_dir=str(tmp_path / f"tokens-{seed}"),
        retry=FAST,
        timeout=10,
    )


def entry(key: SigningKey, revision: int) -> RegistryEntry:
    return RegistryEntry.create(key, revision, b"\x1e" + bytes([revision]) * 47)


async def test_a_full_account_stores_no_new_heads_but_moves_its_own(tmp_path, reserved_port):
    data = str(tmp_path / "relay")
    mine = SigningKey.generate()
    first = reserved_port.port  # held for the test: the relay is restarted on it below
    with relay_served(data, "--quota", "2K", "--listen", f"127.0.0.1:{first}") as info:
        store = device(info, data, tmp_path, 1)
        try:
            await store.set_head(entry(mine, 1))  # while there is room: it takes HEAD_SIZE of the 2K
            await store.put(b"y" * (2048 - HEAD_SIZE - 50))
            with pytest.raises(StoreFull):
                await store.put(b"z" * 100)
            for _ in range(3):  # fresh keys: each a new head, and no room for one
                with pytest.raises(StoreFull, match="new head") as refused:
                    await store.set_head(entry(SigningKey.generate(), 1))
            said = describe_failure(refused.value, store.url)
            assert failure_kind(refused.value) == "full" and "no room left" in said and "quota" in said, said
            assert os.listdir(os.path.join(data, "heads")) == [bytes(entry(mine, 1).pk).hex()]
            await store.set_head(entry(mine, 2))  # its own head still moves: a full device keeps syncing
            assert await store.get_head(entry(mine, 1).pk) == entry(mine, 2)
        finally:
            await store.close()
    # the heads' share of the quota survives a restart (on the same port: the account key is per address)
    with relay_served(data, "--quota", "2K", "--listen", f"127.0.0.1:{info['port']}") as info:
        store = device(info, data, tmp_path, 1)
        other = device(info, data, tmp_path, 2)
        try:
            with pytest.raises(StoreFull, match="new head"):
                await store.set_head(entry(SigningKey.generate(), 1))
            await store.set_head(entry(mine, 3))
            for _ in range(2048 // HEAD_SIZE):  # another account has its own quota, heads and all
                await other.set_head(entry(SigningKey.generate(), 1))
            with pytest.raises(StoreFull, match="new head"):
                await other.set_head(entry(SigningKey.generate(), 1))
            await other.set_head(entry(mine, 4))  # a head another account created: moving it is free
            assert len(os.listdir(os.path.join(data, "heads"))) == 1 + 2048 // HEAD_SIZE
        finally:
            await store.close()
            await other.close()


async def test_a_new_folder_of_an_acknowledged_object_or_pin_is_durable_in_its_parent(tmp_path, monkeypatch):
    """The relay answers a put once the object and the uploader's pin are on disk. A put that made a new
    folder (the object's objects/<2 hex>/, the account's pins/<account>/ or headpins/<account>/) fsynced
    the files in it but not the parent's entry for the folder: after a power loss the folder, and the
    acknowledged object or pin in it, could be gone (the folder store, stores/file.py, syncs it)."""
    from sessiond.relay import objects as relay_objects
    from sessiond.storage import fsutil

    synced: list[str] = []
    real = fsutil.fsync_dir
    monkeypatch.setattr(fsutil, "fsync_dir", lambda p: (synced.append(os.path.abspath(p)), real(p))[1])
    monkeypatch.setattr(relay_objects, "fsync_dir", fsutil.fsync_dir)
    objs = relay_objects.Objects(str(tmp_path), quota=1 << 20)
    h = await objs.put("acct", b"an object")
    assert os.path.isdir(os.path.join(objs.objects, h.hex()[:2]))
    for parent in (objs.objects, objs.pins):
        assert os.path.abspath(parent) in synced, (parent, synced)
    await objs.charge_head("acct", b"\xed" + bytes(32))
    assert os.path.abspath(objs.head_pins) in synced, synced


async def test_a_spent_invite_is_durably_gone(tmp_path, monkeypatch):
    """Registering with an invite deletes its file so that it works once. The deletion was not made
    durable (no fsync of invites/): after a power loss the invite's file could be back, and the code
    would register a second account."""
    import blake3

    from sessiond.relay import accounts as relay_accounts
    from sessiond.storage import fsutil

    synced: list[str] = []
    real = fsutil.fsync_dir
    monkeypatch.setattr(fsutil, "fsync_dir", lambda p: (synced.append(os.path.abspath(p)), real(p))[1])
    monkeypatch.setattr(relay_accounts, "fsync_dir", fsutil.fsync_dir)
    data = str(tmp_path / "relay")
    accts = relay_accounts.Accounts(data, open_registration=False)
    code = relay_accounts.new_invite(data)
    key = SigningKey(bytes([7]) * 32)
    pub = b"\xed" + bytes(key.verify_key)
    challenge = accts.challenge(relay_accounts.REGISTER, pub)
    response = bytes([relay_accounts.REGISTER]) + challenge + blake3.blake3(b"relay.test").digest()
    b64 = lambda b: base64.urlsafe_b64encode(b).decode().rstrip("=")  # noqa: E731
    doc = {"pubKey": b64(pub), "response": b64(response), "signature": b64(key.sign(response).signature)}
    synced.clear()
    assert await accts.answer(relay_accounts.REGISTER, doc | {"invite": code}, "relay.test")
    assert os.listdir(accts.invites) == []
    assert os.path.abspath(accts.invites) in synced, synced
