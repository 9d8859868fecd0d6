"""A push under the old key killed between publishing its head and its pushed mark, while a rekey switched the
session's key (tests/test_crash_rekey_loop.py): the restart seals the recorded revision again, under the new
key, and puts that manifest before it learns that the store's head holds the revision already (sealed under the
old key, taken as this device's own: sync/heads.py published_before). That second manifest is named by nothing.
A push notes its pages for gc before their upload, but not the manifest, which a retry seals the same and the
head names: this one was left in the store for good, never a candidate, never freed."""

from __future__ import annotations

import os

from conftest import cli_json
from sessiond.stores import FileStore
from test_crash_rekey_loop import killed_after_publishing_under_the_old_key, shared_pair


def _objects_in(store: str) -> set[bytes]:
    out = set()
    for _path, _dirs, files in os.walk(os.path.join(store, "objects")):
        out.update(bytes.fromhex(f) for f in files if not f.startswith(".") and len(f) == 64)
    return out


async def _named_by_heads(store: str) -> set[bytes]:
    """What every head and members slot in the folder store names (its manifest or members object)."""
    fs = FileStore(store)
    out = set()
    for name in os.listdir(os.path.join(store, "heads")):
        if name.startswith("."):
            continue
        entry = await fs.get_head(bytes.fromhex(name))
        if entry is not None and len(entry.data) >= 33:
            out.add(bytes(entry.data[1:33]))
    return out


async def test_the_manifest_sealed_again_under_the_new_key_is_freed_by_gc(make_daemon, store_dir, tmp_path):
    a, b, sid = shared_pair(make_daemon, store_dir)
    b.stop()  # (nothing of B's is put from here on)
    killed_after_publishing_under_the_old_key(a, sid, tmp_path)
    at_kill = _objects_in(store_dir)
    a.start()
    assert a.client().sync(sid, wait=True, timeout=30)["complete"]
    done = cli_json(a.home, "gc", "--grace", "0")
    # what the restart put (no message since the kill: no page) that no head names
    left = (_objects_in(store_dir) - at_kill) - await _named_by_heads(store_dir)
    assert not left, (done, [os.path.getsize(os.path.join(store_dir, "objects", h.hex()[:2], h.hex())) for h in left])
    a.stop()
