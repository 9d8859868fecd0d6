"""Heads on a Kubo store outlive their first IPNS record: the daemon republishes the records it signs
(sync/republish.py) before their validity ends, and the Kubo stand-in takes a republish as Kubo does
(the same sequence with a later end of life; docs/FORMATS.md, "IPNS heads")."""

from __future__ import annotations

import datetime as dt
import os

import pytest
from nacl.signing import SigningKey

from conftest import DaemonProc
from servers.kubo import Node, make_rpc_app, start_node
from servers.s5portal import Threaded
from sessiond.stores import ipns
from sessiond.stores.cid import digest
from sessiond.stores.kubo import KuboStore
from sessiond.stores.registry import RegistryEntry
from waiting import wait_for

LIFETIME = 6.0  # seconds: a record of the daemon under test ends this long after it was signed


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
        # the same sequence and the same or an earlier end of life: refused, as Kubo's validator does
        for eol in (now + dt.timedelta(seconds=30), now + dt.timedelta(seconds=10)):
            again = ipns.record_for_head(entry, key, eol=eol)
            assert "older value" in (await store._rpc("routing/put", form, body=_form(again)))[1]
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


def _form(record: bytes):
    from sessiond.stores.http import file_form

    return file_form(record, "record", "application/vnd.ipfs.ipns-record")


def test_a_shared_session_stays_importable_past_its_first_records_end(tmp_path):
    """A session shared from a Kubo store and then left alone: after the end of life of the records
    its push and its share signed (the head of its log, its members slot), they are still valid (the
    same sequence, a later end of life) and another device imports the session."""
    node = Node()
    server = Threaded(make_rpc_app(node)).start()
    url = f"ipfs+http://127.0.0.1:{server.port}"
    a = DaemonProc(str(tmp_path / "a"), url, env={ipns.LIFETIME_ENV: str(LIFETIME)})
    b = DaemonProc(str(tmp_path / "b"), url)
    try:
        a.start()
        b.start()
        with a.client() as ca:
            sid = ca.create_session(name="left alone")["id"]
            ca.append(sid, "user", "hi")
            code = ca.share(sid, write=True)["code"]
            ca.sync(sid, wait=True)
        first = {name: hist[-1] for name, hist in list(node.records.items())}
        assert len(first) == 2  # the log's head and the members slot
        first_eol = {}
        for name, (_seq, record) in first.items():
            pk = b"\xed" + ipns.key_of_name(name)
            first_eol[name] = ipns.head_and_validity(record, pk)[1]
            assert first_eol[name] <= dt.datetime.now(dt.UTC) + dt.timedelta(seconds=LIFETIME)
        ended = max(first_eol.values()) + dt.timedelta(seconds=0.5)
        wait_for(lambda: dt.datetime.now(dt.UTC) > ended, timeout=LIFETIME + 5, what="the first records' end")
        for name, (seq, _record) in first.items():
            now_seq, record = node.records[name][-1]
            entry, eol = ipns.head_and_validity(record, b"\xed" + ipns.key_of_name(name))  # not expired
            assert now_seq == seq == entry.revision and eol > first_eol[name]
        with b.client() as cb:
            assert cb.import_code(code)["session"] == sid
            got = wait_for(lambda: cb.messages(sid)["messages"], timeout=20, what="the message on B")
            assert [m["content"] for m in got] == ["hi"]
    finally:
        a.stop()
        b.stop()
        server.stop()


if os.environ.get(ipns.LIFETIME_ENV):  # a lifetime set for the whole run would change what is tested here
    pytestmark = pytest.mark.skip(reason=f"{ipns.LIFETIME_ENV} is set")
