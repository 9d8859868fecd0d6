"""The daemon's memory does not follow the number of sessions touched: per-session tables are bounded
(locks live only while in use, caches have a cap), and the tracemalloc dump names where memory goes."""

from __future__ import annotations

import asyncio
import os
import platform
import signal

from conftest import eventually, wait_for
from sessiond.storage.connections import Connections
from sessiond.sync.bounded import LRU, KeyedLocks
from sessiond.sync.context import SyncContext
from sessiond.sync.proofs import CHAINS_KEPT, Proofs
from sessiond.sync.pusher import PUBLISHED_KEPT, Pusher


def bare_context() -> SyncContext:
    """A sync context with nothing behind it: enough for its in-memory tables."""
    return SyncContext(db=None, store=None, keys=None, timeout=1.0, on_event=lambda ev: None)  # type: ignore[arg-type]


async def test_session_locks_hold_only_what_is_in_use():
    ctx = bare_context()
    for i in range(10_000):  # every session of a big home pushed once, and rekeyed once
        async with ctx.lock(f"s{i}"):
            assert f"s{i}" in ctx.locks
        async with ctx.rekey_lock(f"s{i}"):
            pass
    assert len(ctx.locks) == 0 and len(ctx.rekey_locks) == 0


async def test_keyed_locks_exclude_and_keep_the_lock_while_waited_on():
    locks = KeyedLocks()
    order: list[str] = []
    inside = asyncio.Event()
    release = asyncio.Event()

    async def first():
        async with locks("a"):
            inside.set()
            order.append("first in")
            await release.wait()
            order.append("first out")

    async def second():
        await inside.wait()
        async with locks("a"):
            order.append("second in")

    t1, t2 = asyncio.create_task(first()), asyncio.create_task(second())
    await inside.wait()
    await asyncio.sleep(0)  # let the second task reach the lock and wait on it
    assert "a" in locks and locks.locked("a")
    release.set()
    await asyncio.gather(t1, t2)
    assert order == ["first in", "first out", "second in"]
    assert len(locks) == 0


async def test_keyed_locks_dropped_after_a_failure_or_cancel():
    locks = KeyedLocks()
    try:
        async with locks("x"):
            raise ValueError("boom")
    except ValueError:
        pass
    holder_in = asyncio.Event()

    async def hold():
        async with locks("y"):
            holder_in.set()
            await asyncio.Event().wait()

    async def wait_on_y():
        async with locks("y"):
            pass

    t1 = asyncio.create_task(hold())
    await holder_in.wait()
    t2 = asyncio.create_task(wait_on_y())
    await asyncio.sleep(0)
    t2.cancel()
    t1.cancel()
    await asyncio.gather(t1, t2, return_exceptions=True)
    assert len(locks) == 0


def test_published_heads_and_proof_chains_are_capped():
    """The pusher's last published head and the checkpoint chain are kept per session touched: capped."""
    ctx = bare_context()
    pusher, proofs = Pusher(ctx, None), Proofs(ctx, None)  # type: ignore[arg-type]
    for i in range(10_000):
        pusher._published[f"s{i}"] = (None, b"pk", 1, b"h")
        proofs._chains[f"s{i}"] = (None, None)
    assert len(pusher._published) == PUBLISHED_KEPT < 10_000
    assert len(proofs._chains) == CHAINS_KEPT < 10_000
    assert pusher._published.get("s9999") is not None and proofs._chains.get("s0") is None


def test_lru_keeps_the_cap_and_the_recent():
    c: LRU[str, int] = LRU(100)
    for i in range(10_000):
        c[f"s{i}"] = i
        if i % 10 == 0:
            assert c.get("s0") == 0  # used often: stays
    assert len(c) == 100
    assert "s0" in c and c.get("s9999") == 9999 and c.get("s5000") is None
    assert c.pop("s0") == 0 and "s0" not in c


def _two_dumps(make_daemon, env: str, name: str):
    """A daemon started with `env`=1, dumped on SIGUSR2, given 3 sessions, dumped again: (the daemon, its
    client, the first dump's path, the second's)."""
    d = make_daemon(env={env: "1"}).start()
    c = d.client()
    d.proc.send_signal(signal.SIGUSR2)
    first = os.path.join(d.home, f"{name}-1.txt")
    wait_for(lambda: os.path.exists(first), what="the first dump")
    for i in range(3):
        c.create_session(name=f"s{i}")
    d.proc.send_signal(signal.SIGUSR2)
    second = os.path.join(d.home, f"{name}-2.txt")
    wait_for(lambda: os.path.exists(second), what="the second dump")
    return d, c, first, second


def test_tracemalloc_dump_on_sigusr2(make_daemon):
    """SESSIOND_TRACEMALLOC=1: each SIGUSR2 writes the top allocation sites into the home, the second
    and later ones with what grew since the first."""
    d, c, first, second = _two_dumps(make_daemon, "SESSIOND_TRACEMALLOC", "tracemalloc")
    text = wait_for(lambda: (t := open(second).read()).endswith("\n") and t, what="the dump written")
    for dump in (first, second):  # private, as every file of the home, whatever the daemon's umask
        assert os.stat(dump).st_mode & 0o777 == 0o600, oct(os.stat(dump).st_mode)
    assert "## top 40 sites" in text and "## top 40 growths since the first dump" in text
    if platform.libc_ver()[0] == "glibc":  # beside Python's heap: the allocator's and SQLite's own
        assert "\n# malloc: heap " in text and "\n# sqlite: in use " in text, text[:400]
    assert c.list_sessions() is not None  # the daemon goes on


def test_memstats_dump_on_sigusr2(make_daemon):
    """SESSIOND_MEMSTATS=1, no tracing: each SIGUSR2 writes the resident memory by kind and the live
    objects by type into the home, the second with what changed since the first (3 sessions' worth)."""
    d, c, _, second = _two_dumps(make_daemon, "SESSIOND_MEMSTATS", "memstats")
    text = open(second).read()
    assert os.stat(second).st_mode & 0o777 == 0o600
    assert not os.path.exists(os.path.join(d.home, "tracemalloc-1.txt"))  # nothing traced
    assert "## top 40 sites" not in text and "## objects by type (the collector's): top 40 by size" in text
    counts = {}
    for line in text.split("## top 40 growths since the first dump\n")[1].splitlines():
        size, _, n, _, kind = line.split(maxsplit=4)
        counts[kind] = int(n)
    assert counts.get("builtins.dict", 0) != 0, text  # the sessions' state: live dicts came and went
    if os.path.exists("/proc/self/smaps"):
        heads = [line for line in text.splitlines() if line.startswith("# resident: ")]
        assert heads and "heap" in heads[0] and "files" in heads[0], text[:400]
    assert c.list_sessions() is not None  # the daemon goes on


async def test_wal_is_reset_under_steady_writes(tmp_path):
    """Writes that never pause: every PASSIVE checkpoint runs while a write transaction is open, so the
    writer never finds the WAL all copied back and never starts it over. Past wal_reset_frames it is
    reset (RESTART) between two batches: the WAL file, and the wal-index the daemon maps, stay bounded."""
    path = str(tmp_path / "db.sqlite")
    c = await Connections.open(path)
    try:
        cp = c._checkpointer
        c.wal_reset_frames = 64
        await c.write("CREATE TABLE filler (x BLOB)")
        for _ in range(30):
            async with c.transaction() as tx:
                await tx.executemany("INSERT INTO filler VALUES (?)", [(os.urandom(1000),)] * 100)
                n = cp.passes
                cp.wake()
                await eventually(lambda n=n: cp.passes > n, what="a checkpoint during the transaction")
        await eventually(lambda: c._resetting is None, what="the last reset")
        assert c.wal_resets >= 1
        assert os.path.getsize(path + "-wal") < 2 << 20  # without resets: ~3.5 MB, and growing
    finally:
        await c.close()


async def test_commits_write_into_a_wal_allocated_ahead_of_them(tmp_path):
    """The checkpointer's thread keeps the WAL file allocated ahead of its end (up to the length the reset
    keeps it within), so a commit on the loop writes into blocks already there and never grows the file:
    growing it made ext4 reserve blocks inside the write(), which waited while the checkpoint's fsyncs
    wrote the same file back (bench/results/profile-tail.md)."""
    from sessiond.storage import wal

    path = str(tmp_path / "db.sqlite")
    c = await Connections.open(path)
    try:
        cp = c._checkpointer
        await c.write("CREATE TABLE filler (x BLOB)")  # the first commit: the WAL allocated
        await eventually(lambda: cp.allocated > 0, what="the WAL allocated")
        size = os.path.getsize(path + "-wal")
        frame = 24 + 4096
        assert size == cp.allocated >= 32 + wal.WAL_ALLOCATE_AHEAD * frame
        for _ in range(4):  # ~3,000 frames
            async with c.transaction() as tx:
                await tx.executemany("INSERT INTO filler VALUES (?)", [(os.urandom(1000),)] * 300)
        assert os.path.getsize(path + "-wal") == size  # written into, not grown
        c.wal_reset_frames = 16  # never allocated past the length the reset keeps the WAL within
        cp.allocated = 0
        cp.wake()
        await eventually(lambda: cp.allocated == 32 + 16 * frame, what="allocated to the reset's length")
    finally:
        await c.close()
    assert not os.path.exists(path + "-wal")  # closed cleanly: SQLite removes it, allocated or not
    c = await Connections.open(path)  # and the database reads back whole
    try:
        assert (await c.committed.fetchone("SELECT count(*) FROM filler"))[0] == 1200
    finally:
        await c.close()


def test_the_daemons_threads_share_one_heap():
    """tune_malloc (called at daemon start) caps glibc at one arena: threads that allocate at the same time
    (the executor's store calls, push workers, the bulk reader) take from the main heap rather than each
    from an arena of its own, whose free top glibc never gave back under the daemon's 32 MB trim threshold
    (bench/memory.py: 8 arenas holding 6-7 MB, 1-2 MB in use, and rising: bench/results/profile-memory.md)."""
    import subprocess
    import sys

    code = (
        "import ctypes, threading\n"
        "from sessiond.daemon.malloc import tune_malloc\n"
        "ok = tune_malloc()\n"
        "held, all_in = [], threading.Barrier(6)\n"
        "def work():\n"
        "    held.append(bytearray(300_000))  # from malloc (over pymalloc's 512 bytes), in this thread\n"
        "    all_in.wait()\n"
        "ts = [threading.Thread(target=work) for _ in range(6)]\n"
        "[t.start() for t in ts]; [t.join() for t in ts]\n"
        "print(ok, flush=True)\n"
        "ctypes.CDLL('libc.so.6').malloc_stats()  # one 'Arena N:' block per arena, on stderr\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "GLIBC_TUNABLES"))}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    if platform.libc_ver()[0] != "glibc":
        return
    assert out.stdout.split() == ["True"], out.stderr
    arenas = [line for line in out.stderr.splitlines() if line.startswith("Arena ")]
    assert arenas == ["Arena 0:"], out.stderr  # untuned: 7 (the main one and one per thread)
