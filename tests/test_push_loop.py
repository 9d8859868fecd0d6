"""A push's CPU work off the event loop (issue 17, row 2: daemon A's loop thread is the bottleneck).

The pure-CPU part of a push (its pages encoded and sealed, the manifest and level tree encoded, the
manifest sealed, the head signed) runs in one job off the loop (with the run's read, in the bulk-read
thread), one hand-off per revision; its SQLite bookkeeping is one read at the start and the two write
transactions that order it (the revision recorded before anything of it is uploaded; the pushed mark,
with the manifest the head left noted for gc, after the store holds the head)."""

from __future__ import annotations

import concurrent.futures
import logging
import threading

import pytest

from sessiond.storage.connections import Connections
from sessiond.stores.registry import RegistryEntry
from sessiond.sync import crypto, revision
from sessiond.sync.pages import PAGE_MAX
from sessiond.sync.push import LogWriter

pytestmark = pytest.mark.asyncio


def watch_cpu(monkeypatch) -> list[tuple[str, str]]:
    """Each call from now on of what a push spends its CPU on: (what, the thread's name)."""
    calls: list[tuple[str, str]] = []

    def wrap(owner, name: str, label: str) -> None:
        real = getattr(owner, name)

        def watched(*args, **kw):
            calls.append((label, threading.current_thread().name))
            return real(*args, **kw)

        monkeypatch.setattr(owner, name, watched)

    wrap(crypto, "encrypt", "seal")  # pages, nodes and manifests (crypto.seal)
    wrap(crypto, "encrypt_chunks", "seal")
    wrap(revision, "encode_manifest", "manifest")
    wrap(revision, "encode_levels", "levels")
    real_create = RegistryEntry.create.__func__  # type: ignore[attr-defined]

    def create(cls, *args, **kw):
        calls.append(("sign", threading.current_thread().name))
        return real_create(cls, *args, **kw)

    monkeypatch.setattr(RegistryEntry, "create", classmethod(create))
    return calls


def count_hand_offs(monkeypatch) -> list[str]:
    """Jobs the event loop hands to a pool of threads from now on (the pool's thread name prefix)."""
    jobs: list[str] = []
    real = concurrent.futures.ThreadPoolExecutor.submit

    def submit(self, *args, **kw):
        if threading.current_thread() is threading.main_thread():
            jobs.append(self._thread_name_prefix)
        return real(self, *args, **kw)

    monkeypatch.setattr(concurrent.futures.ThreadPoolExecutor, "submit", submit)
    return jobs


@pytest.mark.parametrize("messages", [1, 40])
async def test_a_push_seals_and_signs_in_one_job_off_the_loop(devices, monkeypatch, messages):
    a, _ = await devices.open()
    sid = (await devices.dba.create_session({"name": "pushed"}))["id"]
    await devices.dba.append_messages(sid, [{"role": "user", "content": "first"}])
    await a.push(sid)  # the session's key made and its first revision published
    await devices.dba.append_messages(sid, [{"role": "user", "content": f"m{i}"} for i in range(messages)])
    calls = watch_cpu(monkeypatch)
    jobs = count_hand_offs(monkeypatch)
    out = await a.push(sid, compact=False)
    assert out["objects"] == 2 and out["revision"] == 2, out  # one page, one manifest
    assert {what for what, _ in calls} == {"seal", "manifest", "levels", "sign"}, calls
    on_loop = [(what, t) for what, t in calls if t == threading.main_thread().name]
    assert not on_loop, calls
    assert len(jobs) == 1, (jobs, calls)  # one hand-off for the whole revision: its run read, sealed, signed
    assert len({t for _, t in calls}) == 1, calls  # in that one job
    state = await devices.dba.sync_state(sid)
    assert state["pushed_seq"] == await devices.dba.last_seq(sid) and state["head_rev"] == 2 and not state["pending"]


async def test_a_push_reads_its_state_once_and_writes_it_in_two_transactions(devices, monkeypatch):
    a, _ = await devices.open()
    sid = (await devices.dba.create_session({"name": "pushed"}))["id"]
    await devices.dba.append_messages(sid, [{"role": "user", "content": "first"}])
    await a.push(sid)
    first_manifest = a.pusher._published.get(sid)[3]
    await devices.dba.append_messages(sid, [{"role": "user", "content": "second"}])
    reads: list[str] = []
    writes: list[int] = []
    real_latest, real_transaction = Connections.latest, Connections.transaction

    async def latest(self, sql, *args, **kw):
        reads.append(sql)
        return await real_latest(self, sql, *args, **kw)

    def transaction(self):
        writes.append(1)
        return real_transaction(self)

    monkeypatch.setattr(Connections, "latest", latest)
    monkeypatch.setattr(Connections, "transaction", transaction)
    out = await a.push(sid, compact=False)
    assert out["revision"] == 2
    assert len(reads) == 1, reads  # the session, its sync_state, its last seq and its remote (none) at once
    # the revision recorded; then the pushed mark with the manifest the head left (for gc), together
    assert len(writes) == 2, writes
    state = await devices.dba.sync_state(sid)
    assert state["pushed_seq"] == await devices.dba.last_seq(sid) and state["head_rev"] == 2 and not state["pending"]
    released = await devices.dba.released.due(float("inf"))
    assert [(bytes(r["hash"]), r["session_id"]) for r in released] == [(first_manifest, sid)], released


async def test_a_push_that_succeeds_writes_no_log_line(devices, caplog):
    """A line per push was written to the daemon's log on the event loop (~100 us each: the caller's frame
    looked up, the record formatted as JSON, a write): ~50 a second, a few hundred MB a day, under load. A
    push is told by its `sync.pushed` event and `status`; the log keeps what went wrong."""
    a, _ = await devices.open()
    sid = (await devices.dba.create_session({"name": "pushed"}))["id"]
    await devices.dba.append_messages(sid, [{"role": "user", "content": "first"}])
    caplog.set_level(logging.INFO, logger="sessiond")
    assert (await a.push(sid))["revision"] == 1
    await devices.dba.append_messages(sid, [{"role": "user", "content": "second"}])
    assert (await a.push(sid))["revision"] == 2
    assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO], caplog.records


async def test_a_shared_session_s_push_reads_its_state_and_remote_once(devices, monkeypatch):
    a, b = await devices.open()
    await a.start()  # (a share waits for its push)
    sid = await devices.shared("shared", write=True)
    assert (await devices.dba.remote(sid))["announced"]
    await devices.dba.append_messages(sid, [{"role": "user", "content": "second"}])
    reads: list[str] = []
    real_latest = Connections.latest

    async def latest(self, sql, *args, **kw):
        if self is devices.dba.c:
            reads.append(sql)
        return await real_latest(self, sql, *args, **kw)

    monkeypatch.setattr(Connections, "latest", latest)
    before = (await devices.dba.sync_state(sid))["head_rev"]
    reads.clear()
    out = await a.push(sid, compact=False)
    assert out["revision"] == before + 1 and out["objects"] == 2, out
    assert len(reads) == 1, reads
    await b.pull(sid)
    assert (await devices.dbb.conversation(sid)) == (await devices.dba.conversation(sid))


async def test_a_short_run_of_large_messages_is_sealed_on_the_sealing_threads_then_published(devices, monkeypatch):
    """A run larger than a page (large messages) is not one job: its pages are sealed on both sealing
    threads first, then its revision is made; the other device reads it whole."""
    a, b = await devices.open()
    await a.start()
    sid = await devices.shared("large", write=True)
    big = [{"role": "user", "content": f"{i} " + "x" * (PAGE_MAX // 2 + 1000)} for i in range(3)]
    await devices.dba.append_messages(sid, big)
    before = (await devices.dba.sync_state(sid))["head_rev"]
    pages_written = []
    real = LogWriter.write_pages

    async def write_pages(self, run):
        pages_written.append(len(run))
        return await real(self, run)

    monkeypatch.setattr(LogWriter, "write_pages", write_pages)
    out = await a.push(sid, compact=False)
    assert pages_written == [3], pages_written  # not in the revision's one job
    assert out["revision"] == before + 1 and out["objects"] >= 4, out  # three pages at least, a manifest
    await b.pull(sid)
    assert (await devices.dbb.conversation(sid)) == (await devices.dba.conversation(sid))
