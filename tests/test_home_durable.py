"""A new home's folders are durable once made: the device key, the first session keys and the store's
first objects are fsynced as they are written, but a folder made for them is only there after a power loss
if its entry in its parent was fsynced too."""

from __future__ import annotations

import os

from sessiond.daemon import home as home_module
from sessiond.storage import fsutil
from sessiond.stores.file import FileStore
from sessiond.stores.pinning import PinningStore
from sessiond.stores.s5 import S5Store
from sessiond.sync.keys import KeyStore


def test_a_new_homes_folders_are_fsynced_into_their_parents(tmp_path, monkeypatch):
    synced: list[str] = []
    real = fsutil.fsync_dir
    monkeypatch.setattr(fsutil, "fsync_dir", lambda p: (synced.append(os.path.abspath(p)), real(p))[1])
    path = str(tmp_path / "new" / "home")  # its parent is new too
    home = home_module.Home(path)
    home.prepare()
    KeyStore(home.keys)  # the device key, and keys/sessions/, as the daemon's first start makes them
    store = os.path.join(path, "store")  # the default store, a folder in the home
    FileStore(store)
    made = (
        path,
        home.logs,
        home.keys,
        os.path.join(home.keys, "sessions"),
        store,
        *(f"{store}/{s}" for s in ("objects", "heads")),
    )
    for folder in made:
        assert os.path.isdir(folder)
        assert os.path.dirname(os.path.abspath(folder)) in synced, (folder, synced)
    assert str(tmp_path) in synced  # the new parent's own entry
    synced.clear()
    home.prepare()
    KeyStore(home.keys)
    FileStore(store)
    assert synced == []  # folders already there: nothing more to make durable


async def test_the_folders_a_store_keeps_its_state_in_are_fsynced_into_the_home(tmp_path, monkeypatch):
    """store-tokens/ (a portal's login token) and pinning/ (pin request ids), made by the stores when the
    daemon configures them, as the daemon names them (daemon/homestore.py)."""
    synced: list[str] = []
    real = fsutil.fsync_dir
    monkeypatch.setattr(fsutil, "fsync_dir", lambda p: (synced.append(os.path.abspath(p)), real(p))[1])
    home = home_module.Home(str(tmp_path / "home"))
    home.prepare()
    synced.clear()
    tokens = os.path.join(home.path, home_module.TOKEN_DIR)
    pins = os.path.join(home.path, home_module.PINNING_DIR)
    token_file = tmp_path / "pinning-token"
    token_file.write_text("t0ken\n")
    s5 = S5Store("s5+http://127.0.0.1:9", account_seed=b"\x01" * 32, token_dir=tokens)
    inner = FileStore(str(tmp_path / "store"))
    pinned = PinningStore(inner, "http://127.0.0.1:9", token_file=str(token_file), state_dir=pins)
    try:
        for folder in (tokens, pins):
            assert os.path.isdir(folder)
            assert home.path in synced, (folder, synced)
        assert synced.count(home.path) == 2
    finally:
        await s5.close()
        await pinned.close()


def test_the_note_of_a_store_not_made_is_gone_for_good_once_it_is_made(tmp_path, monkeypatch):
    """`store-unmade` makes each start the store's first use, whose folder it makes. Its removal, once the
    store is made, was not fsynced into the home: after a power loss the note could be back, and a start
    before the share is mounted (a boot's) would make the store that went again on the local disk."""
    synced: list[str] = []
    real = fsutil.fsync_dir
    monkeypatch.setattr(fsutil, "fsync_dir", lambda p: (synced.append(os.path.abspath(p)), real(p))[1])
    home = home_module.Home(str(tmp_path / "home"))
    home.prepare()
    home.note_store_unmade(["file:///nowhere/store"])
    synced.clear()
    home.note_store_unmade([])
    assert home.store_unmade() is None
    assert home.path in synced, synced
    synced.clear()
    home.note_store_unmade([])  # (no note: nothing to make durable)
    assert synced == []
