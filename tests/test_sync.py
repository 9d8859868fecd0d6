"""Encrypted snapshots in the store: push, verify, faults, tampering, and what the store can see."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile

import pytest

from conftest import cli_json, eventually, run_cli, wait_for
from devices import count_calls, watch_pulls
from faults import FaultyStore
from sessiond.daemon import remote_checks
from sessiond.storage.database import Database
from sessiond.stores import FileStore
from sessiond.sync.engine import Syncer


def store_files(root: str) -> list[str]:
    return [os.path.join(r, f) for r, _, fs in os.walk(root) for f in fs if not f.startswith(".")]


def test_appends_reach_the_store_encrypted_and_verify(daemon):
    c = daemon.client()
    sid = c.create_session(name="pushme")["id"]
    c.append(sid, "user", "hello store")
    store = os.path.join(daemon.home, "store")
    # with default settings the worker pushes within seconds, without being asked
    wait_for(lambda: c.get_session(sid)["sync"]["pending"] == 0, timeout=10)
    assert c.get_session(sid)["sync"]["head_rev"] >= 1
    assert len(store_files(os.path.join(store, "heads"))) == 1
    rep = cli_json(daemon.home, "verify")
    assert rep["ok"] and rep["sessions"][0]["operations"] >= 2
    daemon.restart()
    assert cli_json(daemon.home, "verify")["ok"]
    st = cli_json(daemon.home, "status")
    assert st["sync"][sid]["state"] == "synced"


def test_sync_wait_and_status_json(daemon):
    c = daemon.client()
    sid = c.create_session()["id"]
    c.append_many(sid, [{"role": "user", "content": f"m{i}"} for i in range(500)])
    res = cli_json(daemon.home, "sync", sid, "--wait")
    assert res["complete"] and res["sessions"][sid]["pending"] == 0
    # the folder store's batched writes (a page, a manifest, a head at least), as status reports them
    (store,) = cli_json(daemon.home, "status")["stores"]
    assert store["writes"] >= 3 and 1 <= store["write_batches"] <= store["writes"]


def test_verify_detects_damage_done_by_hand(daemon):
    c = daemon.client()
    sid = c.create_session()["id"]
    for i in range(3):
        c.append(sid, "user", f"message {i} " + "long " * 2000 * (i == 0))
        c.sync(sid, wait=True)
    store = os.path.join(daemon.home, "store")
    heads = store_files(os.path.join(store, "heads"))
    old_head = open(heads[0], "rb").read()
    c.append(sid, "user", "one more")
    c.sync(sid, wait=True)
    assert run_cli(daemon.home, "verify").returncode == 0
    # the largest object is the page of message 0, which the head must reach (by modification time
    # it could tie with the first manifest, which a newer revision has replaced)
    objects = store_files(os.path.join(store, "objects"))

    def damaged(expect: str):
        res = run_cli(daemon.home, "verify", sid)
        assert res.returncode == 1, res.stdout
        assert "FAILED" in res.stdout and expect in res.stdout, res.stdout
        return res.stdout

    # 1. a flipped byte in a data object
    victim = max(objects, key=os.path.getsize)
    good = open(victim, "rb").read()
    bad = bytearray(good)
    bad[len(bad) // 2] ^= 0x04
    open(victim, "wb").write(bytes(bad))
    damaged("damaged")
    open(victim, "wb").write(good)
    assert run_cli(daemon.home, "verify", sid).returncode == 0
    # 2. a missing object
    os.rename(victim, victim + ".gone")
    damaged("missing")
    os.rename(victim + ".gone", victim)
    # 3. the head rolled back to an older revision
    current = open(heads[0], "rb").read()
    open(heads[0], "wb").write(old_head)
    damaged("rolled back")
    # 4. a head whose signature does not verify
    forged = bytearray(current)
    forged[-1] ^= 1
    open(heads[0], "wb").write(bytes(forged))
    damaged("signature")
    # 5. the head removed
    os.unlink(heads[0])
    damaged("head: missing")
    open(heads[0], "wb").write(current)
    assert run_cli(daemon.home, "verify", sid).returncode == 0


def test_store_holds_no_plaintext(daemon):
    c = daemon.client()
    markers = [f"MARKER{i}XYZZY" for i in range(6)]
    sid = c.create_session(name=markers[0], system_prompt=markers[1], metadata={"k": markers[2]}, tags=[markers[3]])[
        "id"
    ]
    c.create_chat(sid, name=markers[4])
    c.append_many(sid, [{"role": "user", "content": f"{markers[5]} {i} " + "lorem ipsum " * 50} for i in range(2000)])
    c.sync(wait=True)
    assert cli_json(daemon.home, "verify")["ok"]
    files = store_files(os.path.join(daemon.home, "store"))
    assert len(files) > 2
    for f in files:
        data = open(f, "rb").read()
        for m in markers + [sid, "lorem ipsum"]:
            assert m.encode() not in data, (f, m)


# ------------------------------------------------------------------------------ in-process, with a faulty store
@pytest.fixture
def tmp():
    d = tempfile.mkdtemp(prefix="sd-sync-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


class Env:
    """A database, a faulty store over a real folder, and a sync worker: closed however a test ends."""

    def __init__(self, tmp):
        self.tmp = tmp
        self.db = self.store = self.syncer = None
        self.extra = []

    async def open(self, timeout=0.5):
        self.db = await Database.open(os.path.join(self.tmp, "db.sqlite"))
        self.store = FaultyStore(FileStore(os.path.join(self.tmp, "store")))
        self.syncer = self.new_syncer(timeout)
        return self.db, self.store, self.syncer

    def new_syncer(self, timeout=0.5, store=None):
        s = Syncer(
            self.db, store or self.store, os.path.join(self.tmp, "keys"), interval=0.05, push_delay=0, timeout=timeout
        )
        self.extra.append(s)
        return s

    async def close(self):
        for s in self.extra:
            await s.stop()
        if self.db is not None:
            await self.db.close()


@pytest.fixture
async def env(tmp):
    e = Env(tmp)
    yield e
    await e.close()


async def test_push_survives_a_failing_and_hanging_store(env):
    db, store, syncer = await env.open()
    db.listeners.append(lambda ev: syncer.notify(ev["session"]) if ev.get("session") else None)
    await syncer.start()
    s = await db.create_session({"name": "faults"})
    sid = s["id"]
    error = None
    for mode in ("down", "hang"):
        store.mode = mode
        await db.append_messages(sid, [{"role": "user", "content": f"during {mode} {i}"} for i in range(5)])
        # (the error of the mode before stays shown until a push fails anew: wait for this mode's own)
        st = await eventually(
            lambda: _failed_push(syncer, sid, other_than=error), timeout=15, what=f"a push failing on the {mode} store"
        )
        error = st["last_error"]
        assert st["pending"] > 0 and st["last_error"], st  # queued, with the reason shown
    store.mode = "slow"
    await db.append_messages(sid, [{"role": "assistant", "content": "while slow"}])
    store.mode = None
    res = await syncer.sync_now(sid, wait=True, timeout=20)
    assert res["complete"], res
    # checked with the usual store timeout: the 0.5 s that makes the hang fail fast can fail a read of a
    # busy disk too (the pushes above retry after a timeout; a verify does not)
    rep = await env.new_syncer(timeout=30).verify(sid)
    assert rep["ok"], rep
    assert rep["sessions"][0]["operations"] == 12  # create + 5 + 5 + 1: nothing lost


async def test_a_lying_store_is_caught(env):
    db, store, syncer = await env.open(timeout=30)  # (no store hangs here: 0.5 s could fail a busy disk's fsync)
    s = await db.create_session({})
    sid = s["id"]
    await db.append_messages(sid, [{"role": "user", "content": "x"}])
    await syncer.push(sid)
    assert (await syncer.verify(sid))["ok"]

    async def problems():
        rep = await syncer.verify(sid)
        assert not rep["ok"]
        return " ".join(rep["sessions"][0]["problems"])

    store.mode = "flip-get"
    assert "BLAKE3" in await problems()
    store.mode = "vanish"
    assert "missing" in await problems()
    store.mode = None
    await db.append_messages(sid, [{"role": "user", "content": "newer"}])
    await syncer.push(sid)
    store.mode = "rollback"  # the store answers with the previous head
    assert "rolled back" in await problems()
    store.mode = None
    assert (await syncer.verify(sid))["ok"]
    store.mode = "flip-put"  # corrupted at rest while being written
    await db.append_messages(sid, [{"role": "user", "content": "y"}])
    await syncer.push(sid)
    store.mode = None
    assert "damaged" in await problems()


async def test_interrupted_push_resumes_after_restart(env):
    db, store, syncer = await env.open(timeout=30)  # (no store hangs here: 0.5 s could fail a busy disk's fsync)
    s = await db.create_session({})
    sid = s["id"]
    await db.append_messages(sid, [{"role": "user", "content": f"m{i}"} for i in range(10)])
    store.fail_set_head = 1  # objects and manifest go in, the head does not
    with pytest.raises(Exception, match="injected"):
        await syncer.push(sid)
    state = await db.sync_state(sid)
    assert state["pending"] is not None and state["pushed_seq"] == 0  # nothing marked pushed early
    await db.append_messages(sid, [{"role": "user", "content": "after the failure"}])
    # "restart": a new worker over the same database, store and keys picks the queue up by itself
    syncer2 = env.new_syncer(timeout=30, store=FaultyStore(store.inner))
    await syncer2.start()
    res = await syncer2.sync_now(sid, wait=True, timeout=10)
    assert res["complete"]
    rep = await syncer2.verify(sid)
    assert rep["ok"] and rep["sessions"][0]["operations"] == 12 and rep["sessions"][0]["revision"] >= 2


async def test_incremental_push_is_small_and_flat(env):
    db, store, syncer = await env.open(timeout=30)
    sizes = {}
    for n in (100, 10_000):
        s = await db.create_session({})
        sid = s["id"]
        for i in range(0, n, 5000):
            await db.append_messages(
                sid, [{"role": "user", "content": f"message {j} " + "x" * 80} for j in range(i, min(n, i + 5000))]
            )
        await syncer.push(sid)
        worst = 0
        for _ in range(40):  # enough single pushes to fold level 0 upward twice
            await db.append_messages(sid, [{"role": "user", "content": "one more message"}])
            res = await syncer.push(sid)
            worst = max(worst, res["bytes"])
        sizes[n] = worst
        levels = (await db.sync_state(sid))["tree"]
        from sessiond.sync import dagcbor

        assert all(len(lv) < 16 for lv in dagcbor.decode(levels))  # the manifest stays bounded
        assert (await syncer.verify(sid))["ok"]
    assert max(sizes.values()) <= 8 * 1024 + 100, sizes


async def test_import_rejects_checkpoints_that_do_not_verify(env, tmp):
    from sessiond.sync.checkpoint import make_proof
    from sessiond.sync.share import ImportError_

    db, store, syncer = await env.open(timeout=10)
    await syncer.start()
    sid = (await db.create_session({}))["id"]
    await db.append_messages(sid, [{"role": "user", "content": "the real history", "tokens": 4}])
    forged_history = [(db.device_id, 2, "main", "user", "a rewritten history", 4)]
    frontier = await db.devices(sid)
    proof = make_proof(sid, db.device_id, 1, forged_history, frontier, 1.0, syncer.keys.head_key(sid), version=1)
    await db.add_checkpoint(sid, proof)  # validly signed, but over another conversation
    code = (await syncer.share(sid, write=False, passphrase=None, expires_in=None))["code"]
    db2 = await Database.open(os.path.join(tmp, "db2.sqlite"))
    other = Syncer(db2, FileStore(os.path.join(tmp, "store")), os.path.join(tmp, "keys2"), timeout=10)
    env.extra.append(other)
    try:
        with pytest.raises(ImportError_) as e:
            await other.import_code(code, None)
        assert e.value.kind == "checkpoint" and "history was changed" in str(e.value)
        assert await db2.session_ids() == [] and other.keys.session_key(sid) is None  # nothing written
    finally:
        await db2.close()


async def test_follower_pulls_only_sessions_whose_heads_changed(devices):
    """A follower of many shared sessions does work for what changed, not for every session it follows."""
    store_b = FileStore(devices.store_path)
    a, b = await devices.open(store_b=store_b, b={"interval": 0.05, "poll_interval": 0.02})
    dba, dbb = devices.dba, devices.dbb
    await a.start()
    sids = [await devices.shared(f"s{i}", f"first of {i}") for i in range(6)]
    pulled, finished = watch_pulls(b)
    polls = count_calls(store_b, "head_changes")
    await b.start()
    await eventually(lambda: len(finished) >= 6)  # the first round looks at everything
    pulled.clear()
    await dba.append_messages(sids[2], [{"role": "assistant", "content": "news for one session"}])
    await a.sync_now(sids[2], wait=True, timeout=10)

    async def arrived():
        return len(await dbb.list_messages(sids[2])) == 2

    await eventually(arrived, timeout=4, what="the news on the follower")
    seen = len(polls)
    await eventually(lambda: len(polls) >= seen + 5, what="several more polls")  # with nothing new
    assert set(pulled) == {sids[2]}, pulled


async def test_follower_retries_a_failed_pull_without_a_new_change(devices):
    """A pull that failed is tried again soon, although the head change that caused it was already seen."""
    faulty = FaultyStore(FileStore(devices.store_path))
    faulty.list_heads = True
    a, b = await devices.open(store_b=faulty, b={"timeout": 2, "interval": 0.2, "poll_interval": 0.02})
    dba, dbb = devices.dba, devices.dbb
    await a.start()
    sid = await devices.shared("flaky")
    _, finished = watch_pulls(b)
    await b.start()
    await eventually(lambda: finished)  # the first (full) round is done
    faulty.mode = "down"
    await dba.append_messages(sid, [{"role": "assistant", "content": "while the store is down"}])
    await a.sync_now(sid, wait=True, timeout=10)
    await eventually(lambda: sid in b.ctx.pull_errors)  # the change was seen, and its pull failed
    faulty.mode = None

    async def pulled():
        return len(await dbb.list_messages(sid)) == 2

    await eventually(pulled, timeout=3, what="the retried pull")  # well before the 30 s full pull
    await eventually(lambda: sid not in b.ctx.pull_errors)


async def _failed_push(syncer, sid, other_than=None):
    st = (await syncer.status(sid))[sid]
    return st if st["pending"] > 0 and st["last_error"] and st["last_error"] != other_than else None


async def test_a_checkpoint_chain_hashed_in_steps_is_the_chain_hashed_at_once():
    from sessiond.sync.checkpoint import extend
    from sessiond.sync.proofs import HASH_STEP, extend_in_steps

    rows = [(i + 1, "dev", i + 1, "main", "user", f"message {i}", 3, None) for i in range(3 * HASH_STEP + 5)]
    frontier = {"dev": len(rows)}
    for cut in (0, 1, HASH_STEP, len(rows) - 1, len(rows)):
        head = extend(None, {"dev": cut}, rows[:cut])
        for start in (None, head):
            tail = rows[cut:] if start is not None else rows
            assert await extend_in_steps(start, frontier, tail) == extend(start, frontier, tail)
    # a message that sorts before the chain's last: None, as from extend
    whole = extend(None, frontier, rows)
    assert await extend_in_steps(whole, frontier, rows[: HASH_STEP + 2]) is None


async def test_a_checkpoint_signs_and_writes_in_steps_of_their_own(env):
    """A checkpoint comes right after the append that passed the session's token mark, so the client's next
    append arrives while it works: the signature and the write are loop steps of their own (together one
    step of 300-700 us in the daemon: ~1% of a single client's appends waited behind it, its p99,
    bench/results/profile-tail.md)."""
    import asyncio

    import sessiond.sync.proofs as proofs_mod
    from sessiond.sync import checkpoint as cp

    db, _, syncer = await env.open(timeout=10)
    sid = (await db.create_session({"name": "steps"}))["id"]
    turn = 0

    async def ticker() -> None:
        nonlocal turn
        while True:
            await asyncio.sleep(0)
            turn += 1

    seen: list[tuple[str, int]] = []
    real_proof_of, real_add = proofs_mod.proof_of, db.add_checkpoint

    def proof_of(*a):
        seen.append(("sign", turn))
        return real_proof_of(*a)

    async def add(*a):
        seen.append(("write", turn))
        return await real_add(*a)

    proofs_mod.proof_of, db.add_checkpoint = proof_of, add
    tick = asyncio.get_running_loop().create_task(ticker())
    try:
        for k in range(2):
            await db.append_messages(sid, [{"role": "user", "content": f"m{k}.{i}", "tokens": 1} for i in range(20)])
            seen.clear()
            proof = await syncer.make_checkpoint(sid)
            assert [k for k, _ in seen] == ["sign", "write"] and seen[0][1] < seen[1][1], seen
            h, n, _ = cp.proof_hash(await db.conversation(sid), await db.devices(sid), await db.setting_ops(sid))
            assert (proof["hash"], proof["messages"]) == (h.hex(), n)
    finally:
        tick.cancel()
        proofs_mod.proof_of, db.add_checkpoint = real_proof_of, real_add


async def test_checkpoints_carry_the_hash_on_and_start_over_when_history_moves(env):
    """A checkpoint hashes only the messages since the last one (kept per session); its hash must be
    the one computed from scratch over the whole conversation every time, including when a message
    from another device arrives late and sorts before the last one hashed, and when a session is
    deleted and made again under the same id."""
    from sessiond.storage.model import RemoteLog
    from sessiond.sync import checkpoint as cp

    db, store, syncer = await env.open(timeout=10)
    sid = (await db.create_session({"id": "same-id"}))["id"]
    calls = []
    real_extend = cp.extend

    def counting(chain, frontier, rows):
        calls.append((chain is None, len(rows)))
        return real_extend(chain, frontier, rows)

    import sessiond.sync.proofs as proofs_mod

    proofs_mod.extend = counting

    async def check():
        proof = await syncer.make_checkpoint(sid)
        h, n, tokens = cp.proof_hash(await db.conversation(sid), await db.devices(sid), await db.setting_ops(sid))
        assert (proof["hash"], proof["messages"], proof["tokens"]) == (h.hex(), n, tokens)
        await syncer.verify_proof(sid, proof)
        return proof

    try:
        for k in range(5):
            await db.append_messages(sid, [{"role": "user", "content": f"m{k}-{i}", "tokens": i} for i in range(7)])
            await check()
        assert calls[0] == (True, 7) and all(c == (False, 7) for c in calls[1:]), calls  # only the new ones
        # another device's messages, Lamport 1 and 2: they sort before almost everything here
        peer = "peer-device"
        rows = [(sid, "main", peer, s, s, "assistant", f"late {s}", 3, 1.0, None) for s in (1, 2)]
        await db.apply_remote(sid, {peer: RemoteLog(peer, rows, [], 2)})
        calls.clear()
        proof = await check()
        # carried on, refused, then from the start (proofs.HASH_STEP messages per turn of the loop)
        assert calls == [(False, 2), (True, proofs_mod.HASH_STEP), (False, 37 - proofs_mod.HASH_STEP)], calls
        assert proof["frontier"] == {db.device_id: await db.last_seq(sid) - 1, peer: 2}  # the proof's own op after
        await db.append_messages(sid, [{"role": "user", "content": "after", "tokens": 1}])
        calls.clear()
        await check()
        assert calls == [(False, 1)]
        # the same id, another session: nothing carried over from the old one
        await db.delete_session(sid)
        await db.create_session({"id": "same-id"})
        await db.append_messages(sid, [{"role": "user", "content": "a new story", "tokens": 2}])
        calls.clear()
        proof = await check()
        assert calls == [(True, 1)] and proof["messages"] == 1
    finally:
        proofs_mod.extend = real_extend


async def test_pulled_messages_add_their_tokens_once(env):
    """apply_remote adds the tokens of the rows it inserted instead of summing the whole session; rows
    that were already here (a repeated pull) must not count twice."""
    from sessiond.storage.model import RemoteLog

    db, store, syncer = await env.open(timeout=10)
    sid = (await db.create_session({}))["id"]
    await db.append_messages(sid, [{"role": "user", "content": "local", "tokens": 5}])
    peer = "peer-device"

    def rows(seqs):
        return [(sid, "main", peer, s, 100 + s, "assistant", f"pulled {s}", s, 1.0, None) for s in seqs]

    async def used():
        return (await db.get_session(sid))["tokens_used"]

    await db.apply_remote(sid, {peer: RemoteLog(peer, rows([1, 2, 3]), [], 3)})
    assert await used() == 5 + 1 + 2 + 3
    await db.apply_remote(sid, {peer: RemoteLog(peer, rows([2, 3, 4]), [], 4)})  # 2 and 3 again
    assert await used() == 5 + 1 + 2 + 3 + 4
    await db.apply_remote(sid, {peer: RemoteLog(peer, rows([5]) + [(*rows([6])[0][:7], None, 1.0, None)], [], 6)})
    assert await used() == 5 + 1 + 2 + 3 + 4 + 5  # a message without a token count adds nothing
    total = await db._one("SELECT sum(tokens) FROM messages WHERE session_id=?", (sid,))
    assert await used() == total[0] == (await db.get_session(sid, counts=True))["tokens"]


@pytest.mark.parametrize(
    "fields,expect",
    [
        ({"expires_at": "tomorrow"}, "expires_at"),
        ({"settings": {"temperature": "hot"}}, "settings.temperature"),
        ({"tags": "abc"}, "tags"),
        ({"policy": {"token_quota": -5}}, "token_quota"),
        ({"name": 5}, "name"),
        ({"status": "gone"}, "status"),
    ],
)
async def test_a_bad_operation_from_another_device_is_refused_at_pull(tmp, fields, expect):
    """An operation the API would refuse, written by another device (an older or hostile sessiond), is
    refused when pulled and when imported: nothing of it is applied, and the daemon goes on."""
    from sessiond.sync.share import ImportError_

    async with _checked_readers(tmp) as (a, b, c, sid, code):
        dba, dbb, dbc = a.db, b.db, c.db
        await dba.append_messages(sid, [{"role": "user", "content": "after", "tokens": 1}])
        await dba.update_session(sid, fields)  # past the API's checks
        await a.sync_now(sid, wait=True, timeout=10)
        with pytest.raises(ImportError_) as e:
            await b.pull(sid)
        assert expect in str(e.value) and e.value.kind == "invalid", str(e.value)
        got = await dbb.get_session(sid)
        assert got["name"] == "shared" and got["expires_at"] is None and got["tags"] == [] and got["status"] == "active"
        assert [m["content"] for m in await dbb.list_messages(sid)] == ["first"]
        with pytest.raises(ImportError_) as e:
            await c.import_code(code, None)
        assert expect in str(e.value)
        assert await dbc.session_ids() == []


@contextlib.asynccontextmanager
async def _checked_readers(tmp: str):
    """Three devices on one folder store: A writes unchecked (an older or hostile sessiond: its database's
    own calls, past the API's checks) and shared a session read-only with B, which imported it; B and C
    check what other devices wrote as the daemon does (server.Daemon's check_remote), C has imported
    nothing. Yields (a, b, c, the session's id, its code)."""
    store_path = os.path.join(tmp, "store")
    dbs = [await Database.open(os.path.join(tmp, f"{n}.sqlite")) for n in "abc"]
    a = Syncer(dbs[0], FileStore(store_path), os.path.join(tmp, "ka"), timeout=10)
    b, c = (
        Syncer(db, FileStore(store_path), os.path.join(tmp, f"k{n}"), timeout=10, check_remote=remote_checks.remote_log)
        for db, n in zip(dbs[1:], "bc", strict=True)
    )
    try:
        await a.start()
        sid = (await a.db.create_session({"name": "shared"}))["id"]
        await a.db.append_messages(sid, [{"role": "user", "content": "first", "tokens": 1}])
        code = (await a.share(sid, write=False, passphrase=None, expires_in=None))["code"]
        await b.import_code(code, None)
        yield a, b, c, sid, code
    finally:
        for syncer in (a, b, c):
            await syncer.stop()
        for db in dbs:
            await db.close()


async def test_a_message_an_older_sessiond_wrote_with_more_than_1000_tool_calls_syncs(tmp):
    """An answer of 1,001 tool calls, as an older sessiond recorded it before answers were capped at 1,000
    (api/messages.MAX_TOOL_CALLS): every other device's pull and import refused it as an append of 1,001 calls
    is refused (daemon/remote_checks.py), so the session stopped syncing to them for good. The cap is what an
    app or a model may add now; what a log already holds is read as it is (its objects are bounded at 1 MiB
    whatever a message holds), so the session syncs."""
    from sessiond.api.messages import MAX_TOOL_CALLS

    async with _checked_readers(tmp) as (a, b, c, sid, code):
        call = {"type": "function", "function": {"name": "f", "arguments": "{}"}}
        calls = [{"id": f"call_{i}", **call} for i in range(MAX_TOOL_CALLS + 1)]
        await a.db.append_messages(sid, [{"role": "assistant", "content": "", "tool_calls": calls, "tokens": 1}])
        await a.sync_now(sid, wait=True, timeout=10)
        await b.pull(sid)  # was refused: "tool_calls has more than 1000 items"
        await c.import_code(code, None)
        for db in (b.db, c.db):
            got = [m for m in await db.list_messages(sid) if m["role"] == "assistant"]
            assert len(got) == 1 and got[0]["tool_calls"] == calls


async def test_expiry_check_survives_a_stored_bad_value(tmp):
    """A non-number expires_at stored by an older sessiond must not stop every other session's expiry."""
    db = await Database.open(os.path.join(tmp, "db.sqlite"))
    try:
        bad = (await db.create_session({"expires_at": "tomorrow"}))["id"]
        gone = (await db.create_session({"expires_at": 1000.0}))["id"]
        await db.create_session({"policy": {"idle_timeout": "soon"}})
        assert [s["id"] for s in await db.expired(2000.0)] == [gone]
        assert bad
    finally:
        await db.close()


async def test_an_append_to_an_idle_session_costs_three_store_requests(env):
    """Page, manifest, head: the pusher knows the head it published last and does not read it again
    before each commit (it reads it once per session and process, and after a StaleHead)."""
    from sessiond.stores.registry import RegistryEntry

    db, store, syncer = await env.open(timeout=10)
    sid = (await db.create_session({"name": "idle"}))["id"]
    await db.append_messages(sid, [{"role": "user", "content": "first"}])
    await syncer.push(sid)  # the first commit of the session in this process reads the head once
    for i in range(3):
        before = store.calls
        await db.append_messages(sid, [{"role": "user", "content": f"one more {i}"}])
        res = await syncer.push(sid)
        assert store.calls - before == 3, (i, store.calls - before)
        assert res["objects"] == 2 and res["revision"] == i + 2  # a page and a manifest
    # The store holds a newer head than this process published (here: put there behind its back; for
    # a device, a home restored from a backup older than the store): set_head is refused (StaleHead),
    # the head is read, and the commit goes on from the store's revision.
    head = await store.inner.get_head(syncer.keys.head_pk(sid))
    await store.inner.set_head(RegistryEntry.create(syncer.keys.head_key(sid), head.revision + 5, head.data))
    await db.append_messages(sid, [{"role": "user", "content": "after the store moved on"}])
    res = await syncer.push(sid)
    assert res["revision"] == head.revision + 6
    rep = await syncer.verify(sid)
    assert rep["ok"] and rep["sessions"][0]["operations"] == 6, rep
    before = store.calls  # and the next append costs 3 again
    await db.append_messages(sid, [{"role": "user", "content": "and on"}])
    assert (await syncer.push(sid))["revision"] == head.revision + 7 and store.calls - before == 3
    # A store rolled back (a backup of it restored: an older head): the next head is still published
    # above the revision this device pushed, never at one it already used, in 3 requests
    path = store.inner._head_path(syncer.keys.head_pk(sid))
    old = open(path, "rb").read()
    await db.append_messages(sid, [{"role": "user", "content": "before the rollback"}])
    await syncer.push(sid)
    open(path, "wb").write(old)
    before = store.calls
    await db.append_messages(sid, [{"role": "user", "content": "after the rollback"}])
    assert (await syncer.push(sid))["revision"] == head.revision + 9 and store.calls - before == 3
    rep = await syncer.verify(sid)
    assert rep["ok"] and rep["sessions"][0]["operations"] == 9, rep
