"""The folder store's change journal (stores/headjournal.py): a follower's poll costs O(changed heads),
and a journal that is cut, removed, garbled or bypassed falls back to one full listing and misses nothing."""

from __future__ import annotations

import asyncio
import os
import time

import pytest
from nacl.signing import SigningKey

from conftest import cli_json, run_cli
from sessiond.storage.fsutil import atomic_write
from sessiond.stores import changewindow, headjournal
from sessiond.stores import file as file_store
from sessiond.stores.file import FileStore
from sessiond.stores.registry import RegistryEntry
from waiting import wait_for

KEYS = [SigningKey(bytes([i + 1]) * 32) for i in range(40)]


def head(i: int, rev: int) -> RegistryEntry:
    return RegistryEntry.create(KEYS[i], rev, b"\x1e" + bytes([i]) * 32)


@pytest.fixture
def stats(monkeypatch):
    """Count the heads folder's listings and the head files stat()ed by the journal's reader."""
    seen = {"stat": []}
    real = os.stat

    def counted(path, *a, **kw):
        if isinstance(path, str) and len(os.path.basename(path)) == 66:
            seen["stat"].append(os.path.basename(path))
        return real(path, *a, **kw)

    monkeypatch.setattr(headjournal.os, "stat", counted)
    return seen


async def poll(store: FileStore, token):
    out = await store.head_changes(token)
    assert out is not None
    return out


async def test_a_poll_after_n_changes_among_m_heads_reads_n_heads_and_lists_nothing(tmp_path, stats):
    store = FileStore(str(tmp_path / "s"))
    for i in range(40):
        await store.set_head(head(i, 1))
    token, pks = await poll(store, None)
    assert pks is None and store._watch.listings == 1  # the first look: everything
    token, pks = await poll(store, token)
    assert pks == set() and store._watch.listings == 1
    for i in (3, 17, 29):
        await store.set_head(head(i, 2))
    stats["stat"].clear()
    token, pks = await poll(store, token)
    assert pks == {head(i, 2).pk for i in (3, 17, 29)}
    assert store._watch.listings == 1 and len(stats["stat"]) == 3  # three heads stat()ed, no listing
    token, pks = await poll(store, token)
    assert pks == set() and store._watch.listings == 1 and store._watch.records == 3


async def test_two_writers_records_are_all_seen(tmp_path):
    """Two daemons writing the same folder at once: every record whole, every head named."""
    path = str(tmp_path / "s")
    reader, one, two = FileStore(path), FileStore(path), FileStore(path)
    await one.set_head(head(0, 1))  # the journal begins
    token, _ = await poll(reader, None)
    await asyncio.gather(*(w.set_head(head(i, 1)) for i in range(1, 40) for w in [(one, two)[i % 2]]))
    token, pks = await poll(reader, token)
    assert pks == {head(i, 1).pk for i in range(1, 40)}
    assert reader._watch.listings == 1 and reader._watch.bad_records == 0 and reader._watch.records == 39
    await asyncio.gather(one.close(), two.close())


def journal(store: FileStore) -> str:
    return os.path.join(store.root, "heads", headjournal.JOURNAL)


@pytest.mark.parametrize("damage", ["cut", "cut-tail", "removed", "garbage", "no-record"])
async def test_a_damaged_or_bypassed_journal_falls_back_to_the_listing_and_misses_nothing(tmp_path, damage):
    store = FileStore(str(tmp_path / "s"))
    for i in range(5):
        await store.set_head(head(i, 1))
    token, _ = await poll(store, None)
    await store.set_head(head(1, 2))
    await store.set_head(head(2, 2))
    path = journal(store)
    size = os.path.getsize(path)
    if damage == "cut":  # cut mid-record, before the reader's offset
        os.truncate(path, headjournal.HEADER_SIZE + headjournal.RECORD_SIZE // 2)
    elif damage == "cut-tail":  # the last record half there: a torn write that stays torn
        os.truncate(path, size - headjournal.RECORD_SIZE // 2)
    elif damage == "removed":
        os.unlink(path)
    elif damage == "garbage":
        with open(path, "r+b") as f:
            f.seek(size - 2 * headjournal.RECORD_SIZE)
            f.write(os.urandom(2 * headjournal.RECORD_SIZE))
    else:  # a head written by another route (a sync program, an older sessiond): no record
        os.truncate(path, size - 2 * headjournal.RECORD_SIZE)
        # the heads folder changes afterwards (its mtime), as a sync program's rename does
        atomic_write(os.path.join(store.root, "heads", head(3, 2).pk.hex()), head(3, 2).to_bytes())
    changed: set[bytes] = set()
    for _ in range(3):  # a partial record is given one more poll to be completed
        token, pks = await poll(store, token)
        changed |= pks
    want = {head(1, 2).pk, head(2, 2).pk} | ({head(3, 2).pk} if damage == "no-record" else set())
    assert want <= changed, damage
    assert store._watch.listings >= 2
    # and the journal is usable again once a writer appends (started again where it was not whole records)
    await store.set_head(head(4, 2))
    listings = store._watch.listings
    token, pks = await poll(store, token)
    token, pks2 = await poll(store, token)
    assert head(4, 2).pk in pks | pks2
    token, pks = await poll(store, token)
    assert pks == set() and store._watch.listings <= listings + 1


async def test_the_relist_safety_net_runs_every_relist_every(tmp_path, monkeypatch):
    store = FileStore(str(tmp_path / "s"))
    await store.set_head(head(0, 1))
    token, _ = await poll(store, None)
    await poll(store, token)
    assert store._watch.listings == 1
    monkeypatch.setattr(file_store, "RELIST_EVERY", 0.0)
    await poll(store, token)
    assert store._watch.listings == 2


def test_a_record_round_trips_and_a_torn_one_is_refused():
    pk = head(0, 1).pk
    rec = headjournal.record(pk, 7)
    assert len(rec) == headjournal.RECORD_SIZE and headjournal.parse(rec) == (pk, 7)
    for bad in (rec[:-1] + bytes([rec[-1] ^ 1]), rec[:20] + bytes([rec[20] ^ 1]) + rec[21:], rec[:47], b"\0" * 48):
        assert headjournal.parse(bad) is None


def test_two_daemons_follow_through_the_journal(make_daemon, store_dir):
    """End to end: B follows A's session on a folder store; its status shows the journal's records read
    and no more listings of the heads folder than its first."""
    url = "file://" + store_dir
    a, b = make_daemon(url).start(), make_daemon(url).start()
    sid = cli_json(a.home, "new", "--id", "journaled")["id"]
    run_cli(a.home, "add", sid, "--role", "user", "first", check=True)
    code = run_cli(a.home, "share", sid, check=True).stdout.strip()
    run_cli(b.home, "import", input=code, check=True)
    run_cli(a.home, "add", sid, "--role", "user", "second", check=True)
    wait_for(lambda: len(cli_json(b.home, "log", sid)["messages"]) == 2, timeout=10)
    # B may have had the second message from a listing (a heads folder changed less than RACY_NS before its
    # last listing is listed again) or from the pull after its import: A writes on until B has read records
    # of the journal (once the folder has been quiet RACY_NS, a change comes through it)
    deadline = time.monotonic() + 30
    n = 2
    while True:
        (store,) = cli_json(b.home, "status")["stores"]
        if store["journal_records"] >= 1 or time.monotonic() > deadline:
            break
        time.sleep(file_store.RACY_NS / 1e9)  # (not a wait for an event: the quiet spell the rule asks for)
        n += 1
        run_cli(a.home, "add", sid, "--role", "user", f"message {n}", check=True)
        wait_for(lambda: len(cli_json(b.home, "log", sid)["messages"]) == n, timeout=10)
    assert store["journal_records"] >= 1 and store["head_listings"] >= 1
    assert os.path.getsize(os.path.join(store_dir, "heads", headjournal.JOURNAL)) > headjournal.HEADER_SIZE


def test_the_record_vector_in_formats_md():
    import re

    doc = open(os.path.join(os.path.dirname(__file__), "..", "docs", "FORMATS.md"), encoding="utf-8").read()
    hexed = re.search(r"<!-- journal-vector:begin -->\s*```\n(.*?)```", doc, re.S).group(1).strip()
    pk = b"\xed" + bytes(range(32))
    assert headjournal.record(pk, 7).hex() == hexed and headjournal.parse(bytes.fromhex(hexed)) == (pk, 7)


async def test_a_full_journal_is_started_again_and_a_newer_format_left_alone(tmp_path, monkeypatch):
    store = FileStore(str(tmp_path / "s"))
    await store.set_head(head(0, 1))
    token, _ = await poll(store, None)
    path = journal(store)
    first_id = open(path, "rb").read(headjournal.HEADER_SIZE)
    monkeypatch.setattr(headjournal, "MAX_JOURNAL", os.path.getsize(path))  # full: the next append starts anew
    await store.set_head(head(1, 1))
    assert open(path, "rb").read(headjournal.HEADER_SIZE) != first_id
    assert os.path.getsize(path) == headjournal.HEADER_SIZE + headjournal.RECORD_SIZE
    token, pks = await poll(store, token)
    assert pks == {head(1, 1).pk} and store._watch.listings == 2  # a new journal: listed once
    monkeypatch.setattr(headjournal, "MAX_JOURNAL", 4 << 20)
    newer = b"SDHEADS2" + bytes(16)
    open(path, "wb").write(newer)
    await store.set_head(head(2, 1))
    assert open(path, "rb").read() == newer  # not ours to write
    token, pks = await poll(store, token)
    assert pks == {head(2, 1).pk}  # the folder changed: listed


async def test_a_head_deleted_from_the_folder_is_named_changed(tmp_path):
    """A head file deleted (a store that lost a members slot) is a change: the followers of its session
    pull it, and the device that wrote it writes it again (tests/test_members_lost.py)."""
    store = FileStore(str(tmp_path / "s"))
    for i in range(3):
        await store.set_head(head(i, 1))
    token, _ = await poll(store, None)
    os.unlink(os.path.join(store.root, "heads", head(1, 1).pk.hex()))
    token, pks = await poll(store, token)
    assert pks == {head(1, 1).pk}
    token, pks = await poll(store, token)
    assert pks == set()


async def test_the_journal_keeps_what_its_polls_named_within_the_change_window(tmp_path, monkeypatch):
    """A follower's token from many looks ago gets "cannot say" once its polls named more heads than the
    window keeps (a full look follows), while the last look's token still gets exactly what moved."""
    monkeypatch.setattr(changewindow, "MAX_NAMED", 60)
    store = FileStore(str(tmp_path / "s"))
    for i in range(20):
        await store.set_head(head(i, 1))
    first, pks = await poll(store, None)
    token = first
    for rev in range(2, 6):  # 4 rounds of 20 heads moved: 80 named, over the window's 60
        for i in range(20):
            await store.set_head(head(i, rev))
        last = token
        token, pks = await poll(store, token)
        assert len(pks) == 20
    assert store._watch.window.named <= 60
    assert (await poll(store, first))[1] is None
    assert len((await poll(store, last))[1]) == 20
