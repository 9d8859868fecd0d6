"""Heads on a Kubo store outlive their first IPNS record: the daemon republishes the records it signs
(sync/republish.py) before their validity ends, and the Kubo stand-in takes a republish as Kubo does
(the same sequence with a later end of life; docs/FORMATS.md, "IPNS heads")."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import os
import sqlite3
import time

import pytest
from nacl.signing import SigningKey

from conftest import DaemonProc
from servers.kubo import Node, make_rpc_app, served_record, start_node
from servers.s5portal import Threaded
from sessiond.client import ApiError
from sessiond.stores import ipns
from sessiond.stores.base import HeadExpired
from sessiond.stores.cid import digest
from sessiond.stores.kubo import KuboStore
from sessiond.stores.registry import RegistryEntry
from sessiond.sync.republish import EVERY_ENV as REPUBLISH_EVERY_ENV
from sessiond.sync.reput import REPUT_ENV
from waiting import wait_for

LIFETIME = 4.0  # seconds: a record of the daemon under test ends this long after it was signed
# A daemon republishes a record once less than half its lifetime is left, in rounds a quarter of it apart
# (REPUBLISH_EVERY when set): the round that does comes half the lifetime less a round before the record's
# end at the latest, if its daemon is never held off the CPU. The test of that republish gives its daemon
# this lifetime and rounds half a second apart: 3 s to spare (12 s and rounds of 3 s spared as much).
REPUBLISH_LIFETIME = 7.0
REPUBLISH_ROUNDS = {REPUBLISH_EVERY_ENV: "0.5"}


def test_a_record_past_its_lifetime_is_refused_and_the_lifetime_is_configurable(monkeypatch):
    key = SigningKey(b"\x05" * 32)
    entry = RegistryEntry.create(key, 3, b"\x1e" + digest(b"manifest"))
    record = ipns.record_for_head(entry, key)
    later = dt.datetime.now(dt.UTC) + ipns.DEFAULT_LIFETIME + dt.timedelta(days=1)
    with pytest.raises(ipns.IpnsError, match="expired"):
        ipns.head_from_record(record, entry.pk, now=later)
    monkeypatch.setenv(ipns.LIFETIME_ENV, "2.5")
    assert ipns.lifetime() == dt.timedelta(seconds=2.5)
    for bad in ("0", "-1", "a year", "nan"):
        monkeypatch.setenv(ipns.LIFETIME_ENV, bad)
        with pytest.raises(ValueError, match=ipns.LIFETIME_ENV):
            ipns.lifetime()


async def test_kubo_takes_a_republish_and_refreshes_only_what_is_due():
    node, rpc, gw = await start_node()
    store = KuboStore(f"ipfs+http://127.0.0.1:{rpc.port}")
    try:
        key = SigningKey(b"\x06" * 32)
        entry = RegistryEntry.create(key, 2, b"\x1e" + digest(b"manifest"))
        now = dt.datetime.now(dt.UTC)
        soon = ipns.record_for_head(entry, key, eol=now + dt.timedelta(seconds=30))
        form = {"arg": f"/ipns/{ipns.name_of(entry.pk[1:])}", "allow-offline": "true"}
        assert (await store._rpc("routing/put", form, body=_form(soon)))[1] is None
        # the same bytes again: taken (a re-put, which the DHT counts from then); the same sequence and an
        # earlier end of life: refused, as Kubo's validator does
        assert (await store._rpc("routing/put", form, body=_form(soon)))[1] is None
        earlier = ipns.record_for_head(entry, key, eol=now + dt.timedelta(seconds=10))
        assert "older value" in (await store._rpc("routing/put", form, body=_form(earlier)))[1]
        # not due (more than the margin left): nothing read is written
        assert not await store.refresh_head(key, margin=dt.timedelta(seconds=10))
        assert len(node.records[ipns.name_of(entry.pk[1:])]) == 1
        # due: the same entry, at the same sequence, valid for a lifetime again
        assert await store.refresh_head(key, margin=dt.timedelta(seconds=60))
        history = node.records[ipns.name_of(entry.pk[1:])]
        assert [s for s, _ in history] == [2, 2]
        got, eol = ipns.head_and_validity(history[-1][1], entry.pk)
        assert got == entry and eol > now + ipns.DEFAULT_LIFETIME - dt.timedelta(minutes=1)
        # a head never published: nothing to republish
        assert not await store.refresh_head(SigningKey(b"\x07" * 32), margin=dt.timedelta(days=400))
    finally:
        await store.close()
        await rpc.stop()
        await gw.stop()


async def test_a_record_past_its_end_of_life_is_not_found_on_kubo_and_its_signer_is_told_so():
    """Kubo validates a record before it answers it (libp2p/go-libp2p-kad-dht routing.go SearchValue,
    boxo routing/offline GetValue): one past its end of life is "routing: not found", as if never
    published. The store reads it as no head, and refresh_head says the node holds none (None), so that
    its signer writes the head again from what it knows, rather than "nothing due" (False)."""
    node, rpc, gw = await start_node()
    store = KuboStore(f"ipfs+http://127.0.0.1:{rpc.port}")
    try:
        key = SigningKey(b"\x08" * 32)
        entry = RegistryEntry.create(key, 4, b"\x1e" + digest(b"manifest"))
        name = ipns.name_of(entry.pk[1:])
        form = {"arg": f"/ipns/{name}", "allow-offline": "true"}
        short = ipns.record_for_head(entry, key, eol=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1))
        assert (await store._rpc("routing/put", form, body=_form(short)))[1] is None
        ended = node.eols[name] + dt.timedelta(seconds=0.1)
        wait_for(lambda: dt.datetime.now(dt.UTC) > ended, timeout=5, what="the record's end of life")
        assert (await store._rpc("routing/get", {"arg": f"/ipns/{name}"}))[1] == "routing: not found"
        assert await store.get_head(entry.pk) is None
        assert await store.refresh_head(key, margin=dt.timedelta(seconds=60)) is None
        # the node still compares a new record with the expired one: a lower sequence is refused
        lower = RegistryEntry.create(key, 3, b"\x1e" + digest(b"older"))
        assert "older value" in (await store._rpc("routing/put", form, body=_form(ipns.record_for_head(lower, key))))[1]
        # a node that serves it anyway: the reader says it expired (and when), not that the node lies
        node.faults.serve_expired = True
        with pytest.raises(HeadExpired, match=f"{name}.*expired"):
            await store.get_head(entry.pk)
    finally:
        await store.close()
        await rpc.stop()
        await gw.stop()


async def test_kubo_hands_the_records_it_put_or_read_and_puts_them_again_unchanged():
    """take_records hands each record put (set_head) or read (get_head) once; put_record puts the same
    bytes again, which the DHT takes and counts from then; a node holding a newer record refuses it."""
    node, rpc, gw = await start_node()
    node.max_record_age = 60.0
    writer, reader = (KuboStore(f"ipfs+http://127.0.0.1:{rpc.port}") for _ in range(2))
    try:
        key = SigningKey(b"\x0c" * 32)
        first = dataclasses.replace(RegistryEntry.create(key, 1, b"\x1e" + digest(b"one")), signing_key=key)
        await writer.set_head(first)
        name = ipns.name_of(first.pk[1:])
        (record, put) = writer.take_records()[first.pk]
        assert put and record == node.records[name][-1][1] and writer.take_records() == {}
        assert await reader.get_head(first.pk) == first
        assert reader.take_records() == {first.pk: (record, False)}
        before = node.received[name]
        assert await reader.put_record(first.pk, record)
        assert node.received[name] > before and node.reputs[name] == 1 and len(node.records[name]) == 1
        second = dataclasses.replace(RegistryEntry.create(key, 2, b"\x1e" + digest(b"two")), signing_key=key)
        await writer.set_head(second)
        assert not await reader.put_record(first.pk, record)  # the node holds revision 2
        assert ipns.head_from_record(node.records[name][-1][1], first.pk) == second
    finally:
        await writer.close()
        await reader.close()
        await rpc.stop()
        await gw.stop()


def _form(record: bytes):
    from sessiond.stores.http import file_form

    return file_form(record, "record", "application/vnd.ipfs.ipns-record")


@contextlib.contextmanager
def kubo_pair(tmp_path, name: str, *, node: Node | None = None, a_env: dict | None = None, b_env: dict | None = None):
    """A Kubo stand-in (`node`, else one that keeps records) and two daemons on it, A (by default, its
    records' lifetime LIFETIME) having shared a session `name` with one message, "hi", pushed: yields
    (node, a, b, sid, its read-write code); stops all."""
    node = node or Node()
    server = Threaded(make_rpc_app(node)).start()
    url = f"ipfs+http://127.0.0.1:{server.port}"
    a = DaemonProc(str(tmp_path / "a"), url, env={ipns.LIFETIME_ENV: str(LIFETIME)} if a_env is None else a_env)
    b = DaemonProc(str(tmp_path / "b"), url, env=b_env)
    try:
        a.start()
        b.start()
        with a.client() as ca:
            sid = ca.create_session(name=name)["id"]
            ca.append(sid, "user", "hi")
            code = ca.share(sid, write=True)["code"]
            ca.sync(sid, wait=True)
        yield node, a, b, sid, code
    finally:
        a.stop()
        b.stop()
        server.stop()


def assert_imports(b: DaemonProc, sid: str, code: str) -> None:
    """B imports the code and holds the session's one message."""
    with b.client() as cb:
        assert cb.import_code(code)["session"] == sid
        got = wait_for(lambda: cb.messages(sid)["messages"], timeout=20, what="the message on B")
        assert [m["content"] for m in got] == ["hi"]


def test_a_shared_session_stays_importable_past_its_first_records_end(tmp_path):
    """A session shared from a Kubo store and then left alone: after the end of life of the records
    its push and its share signed (the head of its log, its members slot), they are still valid (the
    same sequence, a later end of life) and another device imports the session. (With a 6 s lifetime the
    round had 1.5 s to spare: a daemon held off the CPU that long, on a loaded machine, came after the end
    of life and rightly wrote the heads again at a higher revision, which is not what this test shows.)"""
    lifetime = REPUBLISH_LIFETIME
    a_env = {ipns.LIFETIME_ENV: str(lifetime), **REPUBLISH_ROUNDS}
    with kubo_pair(tmp_path, "left alone", a_env=a_env) as (node, a, b, sid, code):
        first = {name: hist[-1] for name, hist in list(node.records.items())}
        assert len(first) == 2  # the log's head and the members slot
        first_eol = {}
        for name, (_seq, record) in first.items():
            pk = b"\xed" + ipns.key_of_name(name)
            first_eol[name] = ipns.head_and_validity(record, pk)[1]
            assert first_eol[name] <= dt.datetime.now(dt.UTC) + dt.timedelta(seconds=lifetime)
        ended = max(first_eol.values()) + dt.timedelta(seconds=0.5)
        wait_for(lambda: dt.datetime.now(dt.UTC) > ended, timeout=lifetime + 5, what="the first records' end")
        for name, (seq, _record) in first.items():
            now_seq, record = node.records[name][-1]
            entry, eol = ipns.head_and_validity(record, b"\xed" + ipns.key_of_name(name))  # not expired
            late = "" if now_seq == seq else " (written again: the round came after the record's end)"
            assert now_seq == seq == entry.revision and eol > first_eol[name], f"revision {now_seq}, not {seq}{late}"
        assert_imports(b, sid, code)


def test_heads_expired_while_the_daemon_was_off_are_written_again_at_its_start(tmp_path):
    """A device's daemon is off for longer than its records' lifetime (Kubo's own default is 48 h; here
    a few seconds). The node then answers "routing: not found" for both its heads (the log's and the
    members slot), so there is no record to read and republish: another device's import fails, saying
    the head may have expired and what to do. Once the daemon runs again, it writes both heads again
    from its own state, at revisions above those the node held, and the import succeeds."""
    with kubo_pair(tmp_path, "off for long") as (node, a, b, sid, code):
        a.stop()
        held = {name: hist[-1][0] for name, hist in node.records.items()}
        assert len(held) == 2
        ended = max(node.eols.values()) + dt.timedelta(seconds=0.5)
        wait_for(lambda: dt.datetime.now(dt.UTC) > ended, timeout=LIFETIME + 5, what="the records' end of life")
        with b.client() as cb:
            with pytest.raises(ApiError) as err:
                cb.import_code(code)
            assert "expired" in err.value.message, err.value
            assert "daemon" in err.value.message, err.value
            node.faults.serve_expired = True  # a node that answers the expired record all the same
            with pytest.raises(ApiError) as err:
                cb.import_code(code)
            assert err.value.code == "head_expired" and "/ipns/k51" in err.value.message, err.value
            assert "expired at" in err.value.message and "start that device's daemon" in err.value.message
            node.faults.serve_expired = False
        a.start()

        def renewed() -> bool:
            now = dt.datetime.now(dt.UTC)
            return all(node.records[n][-1][0] > seq and node.eols[n] > now for n, seq in held.items())

        wait_for(renewed, timeout=20, what="both heads written again above the revisions the node held")
        assert_imports(b, sid, code)


# seconds: the stand-in's DHT forgets a record this long after it was put (Kubo's: 48 h); a daemon putting again
# every second (REPUT) has 2 s to spare
FORGETS = 3.0
REPUT = {REPUT_ENV: "1"}  # a daemon that puts the records it keeps again every second (by default 12 h)


def served_after(node: Node, since: float) -> dict[str, bool]:
    """Once every record put before `since` (time.monotonic()) is past the stand-in's FORGETS: whether
    each head's record is still served (put again since). (The stand-in ages a record by this process's
    monotonic clock from when it took it: FORGETS after `since`, any record taken before is forgotten.)"""
    wait_for(lambda: time.monotonic() > since + FORGETS + 0.25, timeout=FORGETS + 5, what="the DHT's record age")
    return {name: served_record(node, name) is not None for name in list(node.records)}


def test_the_heads_a_running_writer_signs_outlive_the_dht_s_record_age(tmp_path):
    """Kubo's DHT forgets a record 48 h after it was put, whatever its end of life (a year here), and
    Kubo's republisher does not put sessiond's records again: a session left alone vanished from the
    store two days after its last push. The daemon puts the records it signed again, unchanged, before
    that age (here: a stand-in that forgets in FORGETS seconds, a daemon that puts again every second);
    past the age, both heads are still served and another device imports the session."""
    with kubo_pair(tmp_path, "left alone", node=Node(max_record_age=FORGETS), a_env=REPUT) as (node, a, b, sid, code):
        served = served_after(node, time.monotonic())
        assert len(served) == 2 and all(served.values()), served  # the log's head and the members slot
        assert all(node.reputs.get(name) for name in served), node.reputs
        assert_imports(b, sid, code)


def test_a_follower_keeps_the_heads_of_a_writer_gone_away_readable(tmp_path):
    """A writer shares a session and goes away (its daemon stopped for longer than the DHT keeps a record).
    A device following it keeps the records it read (A's log head, the members slot) and puts them
    again: a third device still imports the session from A's log, after the writer's records would have
    been forgotten."""
    with kubo_pair(tmp_path, "gone away", node=Node(max_record_age=FORGETS), a_env={}, b_env=REPUT) as (
        node,
        a,
        b,
        sid,
        code,
    ):
        assert_imports(b, sid, code)
        a.stop()
        served = served_after(node, time.monotonic())
        assert served and all(served.values()), served
        c = DaemonProc(str(tmp_path / "c"), a.store)
        try:
            c.start()
            assert_imports(c, sid, code)
        finally:
            c.stop()


def _kept_records(d: DaemonProc) -> int:
    """How many head records the daemon's database keeps to put again (read-only, beside the daemon)."""
    with contextlib.closing(sqlite3.connect(f"file:{d.home}/sessions.db?mode=ro", uri=True)) as conn:
        return int(conn.execute("SELECT count(*) FROM kept_records").fetchone()[0])


@pytest.mark.parametrize("how", ["kill -9", "stop"])
def test_the_records_a_writer_put_before_it_stopped_are_put_again_after_its_restart(tmp_path, how):
    """The records a store hands (those this device put, those it read) were kept only in memory until the
    keeper's next round, 10 minutes later by default, and a clean stop did not keep them either: a daemon
    killed or stopped within 10 minutes of its push lost the records of its heads, did not put them again
    after its restart, and the DHT forgot them (48 h after the push; here FORGETS seconds): another
    device could not import the session. They are now kept within a second, and at a clean stop."""
    with kubo_pair(tmp_path, "stopped", node=Node(max_record_age=FORGETS), a_env={}) as (node, a, b, sid, code):
        if how == "kill -9":
            wait_for(lambda: _kept_records(a) == 2, timeout=10, what="the log head's and slot's records kept")
            a.kill()
        else:
            a.stop()
        assert _kept_records(a) == 2
        a.env.update(REPUT)
        a.start()
        served = served_after(node, time.monotonic())
        assert len(served) == 2 and all(served.values()), served
        assert_imports(b, sid, code)


def test_kept_records_hold_no_secret_and_go_with_the_last_session_that_follows_them(tmp_path):
    """The records a device keeps in its database (kept_records) are the public signed IPNS records the
    node serves: no key file's bytes (device seed, session key, write secret) and no session id are in
    them. They go in the delete's own transaction: the delete answered, none is left (they used to wait
    for the keeper's next round, up to 10 minutes; here, with the default, that round is minutes away)."""
    with kubo_pair(tmp_path, "kept", node=Node(max_record_age=FORGETS), a_env={}) as (node, a, b, sid, code):
        wait_for(lambda: _kept_records(a) == 2, timeout=10, what="the log head's and slot's records kept")
        with contextlib.closing(sqlite3.connect(f"file:{a.home}/sessions.db?mode=ro", uri=True)) as conn:
            records = [bytes(r[0]) for r in conn.execute("SELECT record FROM kept_records")]
        served = [served_record(node, name) for name in list(node.records)]
        assert sorted(records) == sorted(r for r in served if r is not None)  # the bytes the node serves
        secrets = [sid.encode()]
        for root, _, files in os.walk(os.path.join(a.home, "keys")):
            secrets += [open(os.path.join(root, f), "rb").read() for f in files]
        assert len(secrets) >= 4  # the id, the device seed, the session's key and its write secret
        assert not [s for s in secrets for r in records if s in r]
        with a.client() as ca:
            ca.delete_session(sid)
        assert _kept_records(a) == 0


if os.environ.get(ipns.LIFETIME_ENV):  # a lifetime set for the whole run would change what is tested here
    pytestmark = pytest.mark.skip(reason=f"{ipns.LIFETIME_ENV} is set")


async def test_records_a_save_was_keeping_when_the_stop_landed_are_kept_by_the_stop(devices):
    """The record keeper takes what the stores handed (a push's head records), then saves it: a stop that
    landed while it saved (the engine cancels the keeper first) dropped what it had taken and not yet
    written, and the stop's own look found the stores' hands empty: the head's record was never put again
    and the DHT forgot it two days later. The records taken are now held until saved, and the stop saves
    them after everything that could hand one has stopped."""
    import asyncio

    node, rpc, gw = await start_node()
    try:
        a, _ = await devices.open(store_a=KuboStore(f"ipfs+http://127.0.0.1:{rpc.port}"))
        kept = devices.dba.kept_records
        real_keep = kept.keep
        saving = asyncio.Event()

        async def held(*args) -> None:  # the keeper's save, under way when the stop lands
            saving.set()
            await asyncio.Event().wait()

        kept.keep = held  # type: ignore[method-assign]
        await a.start()
        sid = (await devices.dba.create_session({"name": "s"}))["id"]
        await devices.dba.append_messages(sid, [{"role": "user", "content": "hi"}])
        res = await a.sync_now(sid, wait=True, timeout=10)
        assert res["pushed"], res
        await asyncio.wait_for(saving.wait(), 10)  # the keeper took the push's record and is saving it
        kept.keep = real_keep  # type: ignore[method-assign]
        await a.stop()
        own = b"\xed" + bytes(a.keys.head_key(sid).verify_key)
        rows = await kept.all()
        assert list(rows) == [own] and rows[own][0] == served_record(node, ipns.name_of(own[1:])), rows
    finally:
        await devices.close()
        await rpc.stop()
        await gw.stop()
