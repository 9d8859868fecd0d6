"""What sync costs a daemon besides its appends (issue 17, row 2: daemon A's event loop is the bottleneck).

A session's key files are written off the event loop: a share and an import each wrote them with two
fsyncs per file on the loop, 5-30 ms during which no request was answered. A follower does not push
after applying what other devices wrote: its own log did not change."""

from __future__ import annotations

import asyncio
import os
import threading

import pytest

from conftest import eventually, wait_for
from sessiond.sync import keys as keys_mod
from sessiond.sync.keys import KeyError_, KeyStore


def watch_writes(monkeypatch, hold: threading.Event | None = None) -> list[tuple[str, bool]]:
    """Each key file written from now on: (its name, whether it was written on the main thread). `hold`: a
    slow disk, each write waiting until the test sets it (a write that slept 0.2 s could end before a
    busy machine ran the test's next step, which had to come while it was under way)."""
    writes: list[tuple[str, bool]] = []
    real = keys_mod.atomic_write

    def atomic_write(path, data, *args, **kw):
        writes.append((os.path.basename(path), threading.current_thread() is threading.main_thread()))
        if hold is not None:
            assert hold.wait(30), "the test never let the write go on"
        return real(path, data, *args, **kw)

    monkeypatch.setattr(keys_mod, "atomic_write", atomic_write)
    return writes


async def test_a_share_and_an_import_write_the_key_files_off_the_event_loop(devices, monkeypatch):
    a, b = await devices.open()
    await a.start()
    sid = (await devices.dba.create_session({"name": "shared"}))["id"]
    await devices.dba.append_messages(sid, [{"role": "user", "content": "first"}])
    writes = watch_writes(monkeypatch)
    code = (await a.share(sid, write=True, passphrase=None, expires_in=None))["code"]
    await b.import_code(code, None)
    names = sorted(n for n, _ in writes)
    assert names == sorted([f"{sid}.key", f"{sid}.write"] * 2), names  # A made both, B stored both
    assert not [n for n, on_loop in writes if on_loop], writes
    assert b.keys.session_key(sid) == a.keys.session_key(sid) is not None
    assert b.keys.write_secret(sid) == a.keys.write_secret(sid) is not None
    fresh = KeyStore(a.keys.folder)  # on disk, as in memory
    assert fresh.session_key(sid) == a.keys.session_key(sid) and fresh.write_secret(sid) == a.keys.write_secret(sid)


async def test_a_key_being_made_is_made_once_and_the_loop_runs_meanwhile(tmp_path, monkeypatch):
    keys = KeyStore(str(tmp_path / "keys"))
    sid = "s_" + "a" * 20
    hold = threading.Event()
    writes = watch_writes(monkeypatch, hold)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.005)

    t = asyncio.create_task(ticker())
    both = asyncio.gather(keys.make_session_key(sid), keys.make_session_key(sid))
    await eventually(lambda: writes and ticks >= 5, what="the loop going on while the key is written")
    hold.set()
    first, second = await both
    t.cancel()
    assert first == second and len(first) == 32
    assert len(writes) == 1 and ticks >= 5, (writes, ticks)  # one write, in a thread: the loop went on
    assert await keys.make_session_key(sid) == first and len(writes) == 1  # made already: not again
    assert KeyStore(keys.folder).session_key(sid) == first


async def test_a_key_deleted_while_it_is_made_stays_deleted(tmp_path, monkeypatch):
    keys = KeyStore(str(tmp_path / "keys"))
    sid = "s_" + "b" * 20
    hold = threading.Event()
    writes = watch_writes(monkeypatch, hold)
    making = asyncio.ensure_future(keys.make_write_secret(sid))
    await eventually(lambda: writes, what="the write under way in its thread")
    with pytest.raises(KeyError_, match="being made"):
        keys.write_secret(sid, create=True)  # a second random secret would replace the one being made
    keys.delete_session_key(sid)  # the session was deleted meanwhile
    hold.set()
    with pytest.raises(KeyError_, match="deleted while"):
        await making
    assert keys.write_secret(sid) is None and KeyStore(keys.folder).write_secret(sid) is None
    assert not os.listdir(keys.sessions_dir)


def test_a_follower_does_not_push_what_it_pulled(make_daemon, store_dir):
    """B applied A's operations (an import, then pulls) and queued a push of its own log after each, which
    found nothing to push; through the socket: B's status counts no push at all (before: one per pull and
    one for the import)."""
    a = make_daemon("file://" + store_dir).start()
    b = make_daemon("file://" + store_dir).start()
    ca, cb = a.client(), b.client()
    sid = ca.create_session(name="followed")["id"]
    cb.import_code(ca.share(sid, write=True)["code"])
    for i in range(2):
        ca.append(sid, "user", f"news {i}")
        ca.sync(wait=True)
        wait_for(lambda n=i: len(cb.messages(sid)["messages"]) == n + 1, what=f"B has message {i}")
    assert cb.status()["pushes"]["started"] == 0
    cb.append(sid, "assistant", "B writes too")  # and B's own writes are pushed as ever
    wait_for(lambda: cb.status()["pushes"]["started"] >= 1, what="B pushed its own append")
    wait_for(lambda: len(ca.messages(sid)["messages"]) == 3, what="A has B's append")
