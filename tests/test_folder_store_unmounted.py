"""A folder store on a share that is not mounted (or a synced folder that went) is the store failing, not
a place to write: the daemon made the folder again on the local disk under the mount point, `sync`
said all was pushed, the other devices never saw those writes, and once the share was mounted again it
hid them (the daemon held heads and objects as pushed that the share lacked). Only the first use of a
store (a home's first start with it, or `--change-store` to it) makes its folder; a store that was there
and went, or an empty folder in its place (an empty mount point), fails as unreachable, naming the
folder, and what waits is pushed once the store is back."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import threading
import time

import pytest
from nacl.signing import SigningKey

from conftest import DaemonProc, cli_json, run_cli, wait_for, write_config
from sessiond.client import Client
from sessiond.stores import FileStore, StoreError
from sessiond.stores.errors import StoreUnreachable
from sessiond.stores.filelayout import MARKER
from sessiond.stores.registry import RegistryEntry
from sessiond.sync.heads import head_data

KEY = SigningKey(bytes(range(32)))


def _head(rev: int) -> RegistryEntry:
    return RegistryEntry.create(KEY, rev, head_data(bytes(32)))


@pytest.fixture
def share(tmp_path):
    """A store folder below a mount point: (the mount point, the store folder, where it goes meanwhile)."""
    mount = tmp_path / "mnt"
    mount.mkdir()
    return str(mount), str(mount / "store"), str(tmp_path / "away")


def contents(d, sid) -> list[str]:
    return [m["content"] for m in d.client().messages(sid, limit=1000)["messages"]]


def _pushed(d) -> str:
    c = d.client()
    sid = c.create_session(name="on a share")["id"]
    c.append(sid, "user", "before the unmount")
    assert c.sync(sid, wait=True, timeout=10)["complete"]
    return sid


def _fails_unreachable(d, sid: str, folder: str, why: str = "is missing or not a folder") -> None:
    """`sync --wait`, status and doctor say the store folder is missing (`why`), and what to do."""
    res = run_cli(d.home, "sync", sid, "--wait", "--timeout", "3", "--json")
    assert res.returncode != 0, res.stdout
    said = json.dumps(json.loads(res.stdout)["sessions"][sid]["last_error"])
    assert f"the store folder {folder} {why}" in said, said
    assert "mount" in said and "--change-store" in said, said
    status = json.dumps(cli_json(d.home, "status")["sync"][sid]["last_error"])
    assert f"the store folder {folder} {why}" in status, status
    doctor = run_cli(d.home, "doctor", "--json")
    assert doctor.returncode != 0, doctor.stdout
    store = json.dumps([f for f in json.loads(doctor.stdout)["findings"] if f["check"] == "store"])
    assert "problem" in store and f"the store folder {folder} {why}" in store and "mount" in store, store


def _pushed_and_seen(make_daemon, a, sid: str, store: str) -> None:
    """The store back: `sync --wait` pushes what waited, and another device on it sees all of it."""
    res = run_cli(a.home, "sync", sid, "--wait", "--timeout", "20")
    assert res.returncode == 0, res.stdout + res.stderr
    b = make_daemon(f"file://{store}").start()
    b.client().import_code(a.client().share(sid)["code"])
    assert contents(b, sid) == ["before the unmount", "while unmounted"]


def test_a_store_folder_moved_away_is_unreachable_and_not_made_again(make_daemon, share):
    mount, store, away = share
    a = make_daemon(f"file://{store}")
    write_config(a.home, push_delay=3600)  # only an asked sync pushes
    a.start()
    sid = _pushed(a)
    os.rename(store, away)  # the share unmounted: its folder is no longer there
    a.client().append(sid, "user", "while unmounted")
    _fails_unreachable(a, sid, store)
    assert os.listdir(mount) == [], "the store folder was made again on the local disk"

    os.rename(away, store)  # mounted again
    _pushed_and_seen(make_daemon, a, sid, store)


def test_an_empty_folder_in_the_store_s_place_is_not_taken_for_it(make_daemon, share):
    """The store is the mount point itself: unmounted, an empty folder is left at its path."""
    mount, _store, away = share
    a = make_daemon(f"file://{mount}")
    write_config(a.home, push_delay=3600)
    a.start()
    sid = _pushed(a)
    assert os.path.isfile(os.path.join(mount, MARKER))
    os.rename(mount, away)
    os.mkdir(mount)  # the empty mount point
    a.client().append(sid, "user", "while unmounted")
    _fails_unreachable(a, sid, mount, "is empty or not a store")
    assert os.listdir(mount) == [], "the empty mount point was taken for the store"

    os.rmdir(mount)
    os.rename(away, mount)
    _pushed_and_seen(make_daemon, a, sid, mount)


@pytest.mark.parametrize("empty", [False, True], ids=["moved away", "an empty mount point"])
def test_sync_wait_says_at_once_that_the_store_folder_is_away(make_daemon, share, empty):
    """A store folder that went (or an empty folder in its place) waits for someone to mount it or put it
    back: `sync --wait` said so only after waiting out its whole timeout, as for a network store briefly
    down; it says so at once, and once the folder is back the same command pushes."""
    mount, store, away = share
    a = make_daemon(f"file://{mount if empty else store}")
    write_config(a.home, push_delay=3600)  # only an asked sync pushes
    a.start()
    sid = _pushed(a)
    if empty:
        os.rename(mount, away)
        os.mkdir(mount)
    else:
        os.rename(store, away)
    a.client().append(sid, "user", "while unmounted")
    began = time.monotonic()
    res = run_cli(a.home, "sync", sid, "--wait", "--timeout", "20")
    took = time.monotonic() - began
    assert res.returncode == 1, res.stdout + res.stderr
    said = res.stdout + res.stderr
    assert "the store folder" in said and "mount its disk or share" in said, said
    assert took < 8, f"sync --wait took {took:.1f} s of its 20 s timeout to say the store folder is away"
    if empty:
        os.rmdir(mount)
        os.rename(away, mount)
    else:
        os.rename(away, store)
    res = run_cli(a.home, "sync", sid, "--wait", "--timeout", "20")
    assert res.returncode == 0, res.stdout + res.stderr


def test_a_restart_while_the_store_is_away_starts_without_making_it(make_daemon, share):
    """A laptop started before its share is mounted: the daemon starts, makes no folder, and pushes what
    waits once the store is there (each push tried again: no `sync --wait` needed)."""
    mount, store, away = share
    a = make_daemon(f"file://{store}")
    write_config(a.home, push_delay=0.1)
    a.start()
    sid = _pushed(a)
    a.stop()
    os.rename(store, away)
    a.store = None  # started as a service is: the remembered store
    a.start()
    a.client().append(sid, "user", "after a restart while unmounted")
    wait_for(
        lambda: "is missing" in json.dumps(cli_json(a.home, "status")["sync"][sid]["last_error"]),
        timeout=15,
        what="the push failing as the store missing",
    )
    assert os.listdir(mount) == []
    os.rename(away, store)
    wait_for(lambda: cli_json(a.home, "status")["sync"][sid]["state"] == "synced", timeout=60, what="pushed")
    b = make_daemon(f"file://{store}").start()
    b.client().import_code(a.client().share(sid)["code"])
    assert contents(b, sid) == ["before the unmount", "after a restart while unmounted"]


def test_a_store_an_older_version_made_without_the_marker_is_still_a_store(make_daemon, share):
    _mount, store, _away = share
    a = make_daemon(f"file://{store}").start()
    sid = _pushed(a)
    a.stop()
    os.unlink(os.path.join(store, MARKER))  # as versions before the marker made it
    a.start()
    a.client().append(sid, "user", "then")
    assert a.client().sync(sid, wait=True, timeout=10)["complete"]
    wait_for(lambda: os.path.isfile(os.path.join(store, MARKER)), what="the marker written into the old store")


def test_a_mirror_s_folder_store_away_keeps_its_writes_in_the_outbox(make_daemon, tmp_path):
    """A mirror of a local folder and a share: the share's writes wait in its outbox while it is away (not
    in a new folder under its mount point), and its drain sends them once it is back."""
    local, mount, away = tmp_path / "local", tmp_path / "mnt", tmp_path / "away"
    mount.mkdir()
    share = mount / "store"
    a = make_daemon([f"file://{local}", f"file://{share}"]).start()
    c = a.client()
    sid = c.create_session(name="mirrored")["id"]
    c.append(sid, "user", "before the unmount")
    assert c.sync(sid, wait=True, timeout=30)["complete"]
    os.rename(share, away)
    c.append(sid, "user", "while unmounted")

    def waiting() -> dict | None:
        c.sync(sid, wait=True, timeout=10)
        st = {s["url"]: s for s in c.status()["stores"]}[f"file://{share}"]
        return st if st["pending"] and st["last_error"] else None

    st = wait_for(waiting, timeout=20, what="the share's writes waiting in its outbox")
    assert f"the store folder {share} is missing" in st["last_error"], st
    assert os.listdir(mount) == []
    os.rename(away, share)
    wait_for(
        lambda: {s["url"]: s for s in c.status()["stores"]}[f"file://{share}"]["pending"] == 0,
        timeout=60,
        what="the outbox drained",
    )
    b = make_daemon(f"file://{share}").start()  # a device that reads only the share
    b.client().import_code(c.share(sid)["code"])
    assert contents(b, sid) == ["before the unmount", "while unmounted"]


async def test_the_store_opened_without_making_it_fails_unreachable_and_makes_nothing(tmp_path):
    root = tmp_path / "store"
    with pytest.raises(StoreError, match="there is no store"):
        FileStore(str(root), create=False)
    store = FileStore(str(root), create=False, missing_ok=True)  # the daemon's own, used before
    with pytest.raises(StoreUnreachable, match=f"the store folder {root} is missing"):
        await store.put(b"an object")
    with pytest.raises(StoreUnreachable):
        await store.set_head(_head(1))
    with pytest.raises(StoreUnreachable, match=f"the store folder {root} is missing"):
        await store.get_head(_head(1).pk)
    assert not root.exists()
    await store.close()


async def test_an_empty_folder_is_no_store_but_a_marked_one_is_made_whole_again(tmp_path):
    root = tmp_path / "store"
    root.mkdir()  # an empty mount point
    store = FileStore(str(root), create=False, missing_ok=True)
    calls = (
        lambda: store.put(b"an object"),
        lambda: store.set_head(_head(1)),
        lambda: store.get_head(_head(1).pk),
        lambda: store.has(bytes(32)),
    )
    for call in calls:
        with pytest.raises(StoreUnreachable, match=f"the store folder {root} is empty or not a store"):
            await call()
    assert list(root.iterdir()) == []
    await store.close()

    made = FileStore(str(root))  # a first use makes it, marker last
    assert sorted(p.name for p in root.iterdir()) == ["heads", "objects", MARKER]
    await made.put(b"an object")
    await made.close()
    shutil.rmtree(root / "heads")  # emptied by hand: the marker says it is still the store
    shutil.rmtree(root / "objects")
    store = FileStore(str(root), create=False)
    h = await store.put(b"again")
    await store.set_head(_head(1))
    assert await store.get(h) == b"again" and (await store.get_head(_head(1).pk)).revision == 1
    await store.close()


async def test_asking_whether_objects_are_there_in_a_store_that_went_is_unreachable(tmp_path):
    """`has` and `first_missing` said "not there" of every object of a store whose folder went, and `free`
    "freed": a mirror's drain, probing whether a store that failed is back (has), took it for back and
    showed it reachable, and `gc` noted as freed objects the share still held once mounted again."""
    root = tmp_path / "mnt" / "store"
    store = FileStore(str(root))
    h = await store.put(b"an object")
    assert await store.has(h) and await store.first_missing([h]) is None
    root.rename(tmp_path / "away")
    calls = (
        lambda: store.has(h),
        lambda: store.has(bytes(32)),
        lambda: store.first_missing([h]),
        lambda: store.free([h]),
    )
    for call in calls:
        with pytest.raises(StoreUnreachable, match=f"the store folder {root} is missing"):
            await call()
    (tmp_path / "away").rename(root)
    assert await store.has(h) and not await store.has(bytes(32)) and await store.first_missing([bytes(32)]) == bytes(32)
    await store.close()


def _started(home: str, *args: str) -> str:
    """`sessiond start` of `home` (a real daemon, stopped by the caller): what it said, on both streams."""
    res = run_cli(home, "start", *args)
    assert res.returncode == 0, res.stdout + res.stderr
    return res.stdout + res.stderr


def test_a_start_on_a_store_folder_that_went_says_so_as_sync_does(make_daemon, share):
    """A daemon started while its store's folder is away (or an empty folder is in its place) started in
    silence: `start` and `status` said nothing of the store until a push failed. They say it now, in the
    words `sync --wait` uses (the folder named, mount it or put it back), and local sessions are served."""
    mount, store, away = share
    a = make_daemon(f"file://{store}").start()
    sid = _pushed(a)
    a.stop()
    os.rename(store, away)
    try:
        said = _started(a.home)
        assert f"the store folder {store} is missing or not a folder" in said and "mount its disk" in said, said
        status = run_cli(a.home, "status")
        assert f"the store folder {store} is missing or not a folder" in status.stdout, status.stdout
        a.client().append(sid, "user", "while unmounted")  # local sessions are served meanwhile
        assert os.listdir(mount) == []
        os.rename(away, store)
        assert run_cli(a.home, "sync", sid, "--wait", "--timeout", "20").returncode == 0
        assert "missing" not in run_cli(a.home, "status").stdout
    finally:
        run_cli(a.home, "stop")


def test_a_first_start_whose_store_folder_cannot_be_made_starts_and_makes_it_once_it_can(tmp_path):
    """A first start on a folder store that cannot be made (a file where one of its folders goes: a path
    mistyped, a share's mount point taken by a file) refused to start, with an older message ("cannot use
    the folder store ...: File exists"). The daemon starts and serves local sessions, says what `sync
    --wait` says of the store (the folder named, what to do), the push waits; the store is made at the
    first push once the path is free."""
    home = str(tmp_path / "home")
    blocker = tmp_path / "share"
    blocker.write_text("not a folder")
    store = blocker / "store"
    try:
        said = _started(home, "--store", f"file://{store}")
        assert f"the store folder {blocker} is missing or not a folder" in said and "mount its disk" in said, said
        c = Client(home)
        sid = c.create_session(name="local")["id"]
        c.append(sid, "user", "kept here")
        res = run_cli(home, "sync", sid, "--wait", "--timeout", "20", "--json")
        assert res.returncode != 0, res.stdout
        err = json.loads(res.stdout)["sessions"][sid]["last_error"]
        assert f"the store folder {blocker} is missing or not a folder" in err, err
        run_cli(home, "stop")
        # a restart is the store's first use still (not a store that went, left unmade: no start makes those)
        assert "is missing or not a folder" in _started(home)
        blocker.unlink()  # the path free: the store is made at the next push, its marker last
        res = run_cli(home, "sync", sid, "--wait", "--timeout", "20")
        assert res.returncode == 0, res.stdout + res.stderr
        assert os.path.isfile(store / MARKER)
        assert "failing" not in run_cli(home, "status").stdout
    finally:
        run_cli(home, "stop")
    os.rename(store, tmp_path / "away")  # made once: from now on a store that went, never made again
    try:
        assert f"the store folder {store} is missing" in _started(home)
        assert not store.exists()
    finally:
        run_cli(home, "stop")


def test_a_start_with_a_mirror_s_folder_store_away_says_so(make_daemon, tmp_path):
    """The same for a mirror's folder store: `start` and `status` name it and its folder, the other store
    takes the pushes, and the share's wait in its outbox."""
    local, mount, away = tmp_path / "local", tmp_path / "mnt", tmp_path / "away"
    mount.mkdir()
    share = mount / "store"
    a = make_daemon([f"file://{local}", f"file://{share}"]).start()
    sid = _pushed(a)
    a.stop()
    os.rename(share, away)
    try:
        said = _started(a.home)
        assert f"store file://{share} failing" in said and f"the store folder {share} is missing" in said, said
        assert f"file://{local} failing" not in said, said
        a.client().append(sid, "user", "while unmounted")
        assert a.client().sync(sid, wait=True, timeout=20)["pushed"]  # (to the local store)
        stores = {st["url"]: st for st in cli_json(a.home, "status")["stores"]}
        st = stores[f"file://{share}"]
        assert st["reachable"] is False and f"the store folder {share} is missing" in st["last_error"], st
        assert stores[f"file://{local}"]["reachable"], stores
        assert os.listdir(mount) == []
    finally:
        run_cli(a.home, "stop")


def test_a_mirror_s_store_not_made_yet_does_not_make_its_other_store_again(make_daemon, tmp_path):
    """A mirror of a store on a share and one whose first use could not make it (a file in its path): the
    home noted a store not made yet (store-unmade, "part"), and each start was a first use again, of every
    store of the mirror. Once the share went (not mounted), the next start made its store again, empty,
    on the local disk under the mount point, said nothing, and pushed there: the hazard h-mount closed.
    The note names the stores not made now, and a start makes only those."""
    mount, blocker = tmp_path / "mnt", tmp_path / "blocker"
    mount.mkdir()
    blocker.write_text("a file where a folder of the store goes")
    share = mount / "store"
    home = str(tmp_path / "home")
    try:
        said = _started(home, "--store", f"file://{share}", "--store", f"file://{blocker / 'store'}")
        assert f"the store folder {blocker} is missing or not a folder" in said, said
        assert os.path.isfile(share / MARKER)  # (the share's store: made at its first use)
    finally:
        run_cli(home, "stop")
    note = open(os.path.join(home, "store-unmade")).read().splitlines()
    assert note == [f"file://{blocker / 'store'}"], note
    os.rename(share, tmp_path / "away")  # the share not mounted
    try:
        said = _started(home)
        assert not share.exists(), os.listdir(mount)
        assert f"the store folder {share} is missing" in said, said
    finally:
        run_cli(home, "stop")
    blocker.unlink()  # the path free: the store not made yet is made at the next start still
    os.rename(tmp_path / "away", share)
    try:
        assert "missing" not in _started(home)
        assert os.path.isfile(blocker / "store" / MARKER)
        assert not os.path.exists(os.path.join(home, "store-unmade"))
    finally:
        run_cli(home, "stop")


async def test_stores_made_late_tell_it_one_at_a_time(tmp_path):
    """A mirror's folder stores that their first use could not make are made by their own threads, and each
    tells (FileStore.on_made) so that the home's note of the stores not made yet (store-unmade) is written
    again from what is still unmade. Two telling at once raced: one's look ("part": the other not made
    yet) written after the other's removal of the note, a note left while every store was made, and each
    start then the first use of every store of the mirror, making again one that went. They tell one at
    a time now."""
    blocker = tmp_path / "blocked"
    blocker.write_text("")
    stores = [FileStore(str(blocker / name), create=True, missing_ok=True) for name in ("a", "b")]
    assert all(s.unmade for s in stores)
    inside, overlapped, second_in = [0], [False], threading.Event()
    lock = threading.Lock()

    def told() -> None:
        with lock:
            inside[0] += 1
            overlapped[0] |= inside[0] > 1
        if inside[0] > 1:
            second_in.set()
        second_in.wait(1.0)  # the first to tell waits a moment for the other to come in too
        with lock:
            inside[0] -= 1

    for s in stores:
        s.on_made = told
    blocker.unlink()
    await asyncio.gather(*(s.put(b"x") for s in stores))
    assert not any(s.unmade for s in stores) and not overlapped[0]
    for s in stores:
        await s.close()


@pytest.mark.parametrize("point", ["write:store-unmade", "write:store-url"])
def test_a_first_start_killed_while_it_notes_the_store_not_made_makes_it_later(tmp_path, point):
    """A first start whose store's folder could not be made remembered the store (store-url), then noted
    it not made (store-unmade): killed between the two (kill -9, a power loss), the home remembered a store
    with no note, so each later start took it for a store that was made and went, and none made it, ever
    (the user had to `mkdir -p DIR/objects DIR/heads`). The note is written first now: killed between the
    two, the next start is the store's first use still, and makes it once it can."""
    home = str(tmp_path / "home")
    blocker = tmp_path / "share"
    blocker.write_text("not a folder")
    store = blocker / "store"
    d = DaemonProc(home, f"file://{store}", env={"SESSIOND_CRASH_AT": point})
    with pytest.raises(RuntimeError):
        d.start()
    d.env.pop("SESSIOND_CRASH_AT")
    blocker.unlink()  # the path free: this start is the store's first use, which makes it
    d.start()
    try:
        assert os.path.isfile(store / MARKER)
        assert not os.path.exists(os.path.join(home, "store-unmade"))
        assert d.client().status()["device_id"]
    finally:
        d.stop()


def test_the_note_of_the_version_before_is_read_and_named_anew(tmp_path):
    """store-unmade as the version before wrote it names no store: "whole" (none made: another store needs
    no --change-store) or "part" (some of a mirror's: the one of its folder stores that holds no store now).
    A start reads either, and writes the note anew naming the stores not made."""
    home = str(tmp_path / "home")
    note = os.path.join(home, "store-unmade")
    mount, blocker = tmp_path / "mnt", tmp_path / "blocker"
    mount.mkdir()
    blocker.write_text("a file where a folder of the store goes")
    share, blocked = f"file://{mount / 'store'}", f"file://{blocker / 'store'}"
    try:
        _started(home, "--store", share, "--store", blocked)
    finally:
        run_cli(home, "stop")
    with open(note, "w") as f:
        f.write("part\n")
    try:
        _started(home)
        assert open(note).read().splitlines() == [blocked]
    finally:
        run_cli(home, "stop")
    with open(note, "w") as f:
        f.write("whole\n")  # (as if the share's were not made either): no store of it used, no move
    other = tmp_path / "other"
    try:
        _started(home, "--store", f"file://{other}")
        assert os.path.isfile(other / MARKER) and not os.path.exists(note)
    finally:
        run_cli(home, "stop")


def test_a_move_killed_before_the_home_remembers_the_new_store_is_a_move_still(tmp_path):
    """The note of the stores not made is written before the home remembers the store: a move
    (--change-store) to a store whose folder cannot be made, killed between the two, leaves the note of the
    new store with the old one remembered. The old store was used: the next start with the new one is a
    move still, which needs --change-store (a note saying only "none made" took it for no move)."""
    home = str(tmp_path / "home")
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a folder of the store goes")
    first, second = f"file://{tmp_path / 'first'}", f"file://{blocker / 'store'}"
    try:
        _started(home, "--store", first)
    finally:
        run_cli(home, "stop")
    crashed = {"SESSIOND_CRASH_AT": "write:store-url"}
    try:
        res = run_cli(home, "start", "--store", second, "--change-store", env=crashed)
        assert res.returncode != 0, res.stdout + res.stderr
        assert open(os.path.join(home, "store-url")).read().strip() == first
        res = run_cli(home, "start", "--store", second)
        assert res.returncode != 0 and "--change-store" in res.stdout + res.stderr, res.stdout + res.stderr
    finally:
        run_cli(home, "stop")


def test_the_note_part_of_the_version_before_does_not_make_a_store_that_went(tmp_path):
    """A note "part" (a few earlier versions: some stores of the mirror not made, which unsaid) was read as
    every store of the mirror not made: at the next start each was a first use, and a share of the mirror
    that was made and then not mounted was made again, empty, on the local disk under its mount point. It
    is read as what it meant: the mirror's folder stores that are no store now, when there is one such (the
    store not made, made now); when there are more, any of them may be a store that went, and none is made
    (the start says so)."""
    home = str(tmp_path / "home")
    note = os.path.join(home, "store-unmade")
    mount, blocker = tmp_path / "mnt", tmp_path / "blocker"
    mount.mkdir()
    blocker.write_text("a file where a folder of the store goes")
    share, blocked = mount / "store", blocker / "store"
    try:
        _started(home, "--store", f"file://{share}", "--store", f"file://{blocked}")
    finally:
        run_cli(home, "stop")
    with open(note, "w") as f:
        f.write("part\n")  # as those versions wrote it
    os.rename(share, tmp_path / "away")  # the share not mounted
    try:
        said = _started(home)
        assert not share.exists(), os.listdir(mount)  # not made again on the local disk
        assert f"the store folder {share} is missing" in said, said
    finally:
        run_cli(home, "stop")
    logged = [json.loads(line) for line in open(os.path.join(home, "logs", "sessiond.log"))]
    assert any(f"file://{blocked}" in e["msg"] and "store-unmade" in e["msg"] for e in logged), logged
    # one store of the mirror not a store (the share back): it is the one not made, made once it can be
    os.rename(tmp_path / "away", share)
    with open(note, "w") as f:
        f.write("part\n")
    blocker.unlink()
    try:
        assert "missing" not in _started(home)
        assert os.path.isfile(blocked / MARKER) and not os.path.exists(note)
    finally:
        run_cli(home, "stop")


def test_change_store_naming_the_store_that_went_makes_it_again(make_daemon, share):
    """A store folder that went is never made again on its own (a share not mounted must not get a new
    store on the local disk), and `start --store URL --change-store` naming that same store did not make it
    either: the only way back was `mkdir -p DIR/objects DIR/heads`. Named with --change-store, it is the
    user's say-so: the store is made (its marker too), and `sync --wait` pushes everything to it again."""
    mount, store, away = share
    a = make_daemon(f"file://{store}").start()
    sid = _pushed(a)
    a.stop()
    shutil.rmtree(store)  # lost for good
    try:
        said = _started(a.home)  # without --change-store: not made
        assert f"the store folder {store} is missing" in said and not os.path.exists(store), said
    finally:
        run_cli(a.home, "stop")
    try:
        said = _started(a.home, "--store", f"file://{store}", "--change-store")
        assert "missing" not in said, said
        assert os.path.isfile(os.path.join(store, MARKER))
        assert run_cli(a.home, "sync", sid, "--wait", "--timeout", "20").returncode == 0
        assert "missing" not in run_cli(a.home, "status").stdout
        b = make_daemon(f"file://{store}").start()  # another device reads it all from the store made again
        b.client().import_code(a.client().share(sid)["code"])
        assert contents(b, sid) == ["before the unmount"]
        b.stop()
    finally:
        run_cli(a.home, "stop")
