"""OLDER_KEY with real daemons (sync/pusher.py, sync/rekeyowed.py): a push that finds its revision published already
under a key from before a rekey marks it so before it publishes a new head under the current key; killed (kill -9)
between that mark and the new head, the push stays owed. Here B's push of a message is held after its head went out
under the first key, while B takes A's first rekey (its push left to the chain's end: A's second rekey, which drops B,
is in the new slot already) and is killed; started again, the push of that recorded revision finds it under the
first key, marks it, and B dies there (SESSIOND_CRASH_AT=push:pushed); started once more, the push is still owed
and made: B's head ends under the key B is on (what a device holding only the keys from the first rekey on opens),
and C, which joined after the first rekey, reads every message. With the mark "not known" (NULL, as before
OLDER_KEY) B owed nothing: its head stayed under the first key for good while `status` said all pushed (C still reads
B's messages here, through the freeze of B's log A carried into its second rekey: the head is what fails)."""

from __future__ import annotations

import asyncio
import os
import sqlite3

from conftest import cli_json, flag_dir, wait_for
from killing import contents, session_key, shared_writers
from sessiond.stores import FileStore
from sessiond.sync.heads import manifest_hash_of, open_manifest
from sessiond.sync.keys import KeyStore


def _rekey_pending(d, sid: str) -> bool:
    return os.path.exists(os.path.join(d.home, "keys", "sessions", f"{sid}.rekey"))


def _head_announce(d, sid: str) -> bytes | None:
    db = sqlite3.connect(f"file:{os.path.join(d.home, 'sessions.db')}?mode=ro", uri=True, timeout=10)
    try:
        row = db.execute("SELECT head_announce FROM sync_state WHERE session_id = ?", (sid,)).fetchone()
    finally:
        db.close()
    return None if row is None or row[0] is None else bytes(row[0])


def _head_opens_under(d, sid: str, store_dir: str, key: bytes) -> bool:
    """Whether the head of the daemon `d`'s log of `sid` in the folder store opens under `key`."""
    pk = KeyStore(os.path.join(d.home, "keys")).head_pk(sid)
    store = FileStore(store_dir, create=False)
    head = asyncio.run(store.get_head(pk))
    assert head is not None
    mhash = manifest_hash_of(head)
    try:
        open_manifest(asyncio.run(store.get(mhash)), mhash, key, pk, head.revision)
    except Exception:
        return False
    return True


def test_a_kill_after_a_head_found_under_a_pre_rekey_key_was_marked_leaves_its_push_owed(make_daemon, store_dir):
    url = f"file://{store_dir}"
    a, b, sid = shared_writers(make_daemon, url, "owed older")
    b.client().append(sid, "user", "b joins")
    assert b.client().sync(sid, wait=True, timeout=30)["complete"]

    def a_read(text: str) -> bool:
        a.client().sync(sid, wait=True, timeout=10)
        return text in contents(a, sid)

    wait_for(lambda: a_read("b joins"), timeout=30, what="A reads B's first message")
    first_key, b_id = session_key(b, sid), cli_json(b.home, "status")["device_id"]

    # B's push of a message under the first key: its head out, held before its pushed mark; A reads it
    flag = os.path.join(flag_dir(), "push.published")
    b.stop()
    rotated = os.path.join(flag_dir(), "rekey.rotated")  # (B's switch to the first rekey's key: held, see below)
    b.env["SESSIOND_TEST_PAUSE"] = f"push.published:{flag},rekey.rotated:{rotated}"
    b.start()
    b.client().append(sid, "user", "under the first key")
    b.client().sync(sid)
    wait_for(lambda: os.path.exists(flag), timeout=30, what="B's head published under the first key")

    wait_for(lambda: a_read("under the first key"), timeout=30, what="A reads B's message")

    # A rekeys; C joins on that key. B (its push still held) takes that rekey, held as its keys rotate
    a.client().rekey(sid)
    c = make_daemon(url).start()
    c.client().import_code(a.client().share(sid, write=True)["code"])
    c.client().append(sid, "user", "c joins")
    assert c.client().sync(sid, wait=True, timeout=30)["complete"]
    a.client().sync(sid, wait=True, timeout=30)
    b.client().sync(sid)
    wait_for(lambda: os.path.exists(rotated), timeout=30, what="B taking the first rekey")
    # A rekeys again, dropping B: a notice B can never take (B, taking the first rekey once that one is out, would
    # refuse it too: rekeyed again without it). Let go, B's switch sees it in the slot it switches to and leaves its
    # push to the chain's end (its push under that key would wait for the held one); the switch done and forgotten,
    # B is killed
    a.client().rekey(sid, drop=[b_id])
    assert a.client().sync(sid, wait=True, timeout=30)["complete"]
    os.unlink(rotated)

    def switched() -> bool:
        return session_key(b, sid) not in (first_key, session_key(a, sid)) and not _rekey_pending(b, sid)

    wait_for(switched, timeout=30, what="B switched to the first rekey's key")
    on = session_key(b, sid)
    b.kill()

    # started again: the recorded revision's push finds it under the first key, marks it so, and dies there
    del b.env["SESSIOND_TEST_PAUSE"]
    b.env["SESSIOND_CRASH_AT"] = "push:pushed"
    try:
        b.start()
    except RuntimeError:
        pass  # (it died there before it said it was ready)
    assert b.proc is not None
    assert b.proc.wait(30) == 137  # (died at the crash point)
    for pipe in (b.proc.stdout, b.proc.stderr):
        if pipe is not None:
            pipe.close()
    # marked pushed, the head found under a pre-rekey key: not marked sealed on the slot B is on (OLDER_KEY)
    assert _head_announce(b, sid) in (b"", None)
    assert not _head_opens_under(b, sid, store_dir, on) and _head_opens_under(b, sid, store_dir, first_key)
    assert session_key(b, sid) == on and not _rekey_pending(b, sid)

    # started once more: the push is still owed, and made; C, holding the keys from the first rekey on, reads it
    del b.env["SESSIOND_CRASH_AT"]
    b.start()

    def c_reads_all() -> bool:
        b.client().sync(sid, wait=True, timeout=10)
        c.client().sync(sid, wait=True, timeout=10)
        return {"b joins", "under the first key"} <= set(contents(c, sid))

    wait_for(c_reads_all, timeout=40, what="C reads B's messages")
    wait_for(lambda: _head_opens_under(b, sid, store_dir, on), timeout=30, what="B's head under the key it is on")
    assert session_key(b, sid) == on
    assert _head_announce(b, sid) not in (None, b"")  # sealed on the slot B is on
    assert contents(c, sid) == contents(a, sid)
    for d in (a, c):
        assert cli_json(d.home, "verify")["ok"], d.home
