"""A new home's folders are durable once made: the device key, the first session keys and the store's
first objects are fsynced as they are written, but a folder made for them is only there after a power loss
if its entry in its parent was fsynced too."""

from __future__ import annotations

import os

from sessiond.daemon import home as home_module
from sessiond.storage import fsutil
from sessiond.stores.file import FileStore
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
