"""A session's members slot (sync/members.py: the signed entry, and the object it names, that lists the
writers) lost from the store is written again by the devices that wrote it, at their next `sessiond
sync` or as soon as their followers see its entry gone: otherwise a share code used afterwards imports
nothing ("no members entry"), or follows fewer writers than the session has."""

from __future__ import annotations

import json
import os

import pytest

from conftest import cli_json, run_cli, wait_for, write_config
from sessiond.client import ApiError
from sessiond.sync.keys import KeyStore
from sessiond.sync.members import announce_key

HOUR = 3600.0


def contents(d, sid):
    return [(m["role"], m["content"]) for m in d.client().messages(sid, limit=1000)["messages"]]


def synced(d, sid) -> bool:
    res = d.client().sync(sid, wait=True, timeout=30)
    assert res["complete"], res  # (a pull that fails: the slot not found, or rolled back)
    return True


def slot_head_file(store: str, *devices, sid: str) -> str:
    """The folder store's file of the members slot's head: the one head that is no device's log."""
    logs = {KeyStore(os.path.join(d.home, "keys")).head_pk(sid).hex() for d in devices}
    (slot,) = [f for f in os.listdir(os.path.join(store, "heads")) if not f.startswith(".") and f not in logs]
    return os.path.join(store, "heads", slot)


def shared(make_daemon, url, env: dict | None = None, **settings):
    """`settings`: the config.toml of both writers (conftest.write_config)."""
    a, b = make_daemon(url, env=env), make_daemon(url, env=env)
    for d in (a, b):
        if settings:
            write_config(d.home, **settings)
        d.start()
    sid = a.client().create_session(name="members")["id"]
    a.client().append(sid, "user", "a1")
    code = a.client().share(sid, write=True)["code"]
    b.client().import_code(code)
    b.client().append(sid, "assistant", "b1")
    assert b.client().sync(sid, wait=True, timeout=30)["complete"]
    assert a.client().sync(sid, wait=True, timeout=30)["complete"]
    assert contents(a, sid) == [("user", "a1"), ("assistant", "b1")]
    return a, b, sid


def test_a_members_slot_deleted_from_the_store_is_written_again_by_sync(make_daemon, store_dir):
    url = "file://" + store_dir
    # the writers' followers poll once an hour, not every 0.25 s: a poll sees the slot's entry gone and
    # writes it again by itself (test_a_members_slot_lost_from_the_store_is_written_again_without_a_sync),
    # which a verify slower than that found whole, and the test failed; every pull here is a sync's
    a, b, sid = shared(make_daemon, url, poll_interval=HOUR, sync_interval=HOUR)
    os.remove(slot_head_file(store_dir, a, b, sid=sid))  # the store lost the slot's entry
    res = run_cli(a.home, "verify", sid, "--json")  # verify says so, and what writes it again
    assert res.returncode == 1, res.stdout
    (s,) = json.loads(res.stdout)["sessions"]
    assert any(p.startswith("members: ") for p in s["problems"]) and "sessiond sync" in s["repair"], s

    res = a.client().sync(sid, wait=True, timeout=30)  # a writer of the slot notices, and writes it again
    assert res["complete"], res
    c = make_daemon(url).start()  # a code used afterwards imports the session, with both writers
    c.client().import_code(a.client().share(sid)["code"])
    assert contents(c, sid) == [("user", "a1"), ("assistant", "b1")]
    b.client().append(sid, "assistant", "b2")  # b is followed (a writer of the slot)
    assert b.client().sync(sid, wait=True, timeout=30)["complete"]
    wait_for(lambda: synced(c, sid) and ("assistant", "b2") in contents(c, sid), what="c follows b")
    # and the devices that had read the slot before take the new one (its revision is past theirs)
    a.client().append(sid, "user", "a2")
    assert a.client().sync(sid, wait=True, timeout=30)["complete"]
    wait_for(lambda: synced(b, sid) and ("user", "a2") in contents(b, sid), what="b follows a")
    for d in (a, b, c):
        assert cli_json(d.home, "verify")["ok"]


def test_a_members_slot_whose_object_was_lost_is_written_again_by_sync(make_daemon, store_dir):
    url = "file://" + store_dir
    a, b, sid = shared(make_daemon, url)
    with open(slot_head_file(store_dir, a, b, sid=sid), "rb") as f:
        entry = f.read()
    # the slot's entry names its object by hash (docs/FORMATS.md: data = 0x1e | BLAKE3 | salt): delete it
    objects = os.path.join(store_dir, "objects")
    named = [os.path.join(r, n) for r, _, fs in os.walk(objects) for n in fs if bytes.fromhex(n) in entry]
    assert len(named) == 1, named
    os.remove(named[0])
    (s,) = json.loads(run_cli(a.home, "verify", sid, "--json").stdout)["sessions"]
    assert "sessiond sync" in s.get("repair", ""), s

    res = a.client().sync(sid, wait=True, timeout=30)
    assert res["complete"], res
    c = make_daemon(url).start()
    c.client().import_code(a.client().share(sid)["code"])
    assert contents(c, sid) == [("user", "a1"), ("assistant", "b1")]
    assert cli_json(b.home, "verify")["ok"]


def slot_file(store: str, d, sid: str) -> str:
    """The folder store's file of the members slot `d` writes now (its announce key: after a rekey, the
    new one's)."""
    ws = KeyStore(os.path.join(d.home, "keys")).write_secret(sid)
    assert ws is not None
    return os.path.join(store, "heads", "ed" + bytes(announce_key(ws).verify_key).hex())


def imports(c, code: str) -> bool:
    """Whether `code` imports on `c` now (a code used while the slot is lost fails: then it is tried again)."""
    try:
        c.client().import_code(code)
    except ApiError:
        return False
    return True


def slot_object(store: str, d, sid: str) -> str:
    """The folder store's file of the object the members slot `d` writes names (docs/FORMATS.md: its
    entry's data is 0x1e | BLAKE3 | salt)."""
    with open(slot_file(store, d, sid), "rb") as f:
        entry = f.read()
    objects = os.path.join(store, "objects")
    (named,) = [os.path.join(r, n) for r, _, fs in os.walk(objects) for n in fs if bytes.fromhex(n) in entry]
    return named


@pytest.mark.parametrize("lost", ["entry", "object"])
def test_a_members_slot_lost_from_the_store_is_written_again_without_a_sync(make_daemon, store_dir, lost):
    """No one has to run `sessiond sync` for a code to work again. The slot's entry deleted: the writers'
    followers notice its head gone from a folder store (a deletion is a change of its heads). The object
    the entry names deleted, the entry left as it was: no head changed, so no poll names the slot; the
    writers' followers read the slot's object again in their full rounds (every FULL_PULL_EVERY seconds,
    1 here). Either way they write the slot again."""
    url = "file://" + store_dir
    a, b, sid = shared(make_daemon, url, env={"SESSIOND_FULL_PULL_EVERY": "1"} if lost == "object" else None)
    code = a.client().share(sid)["code"]
    os.remove(slot_file(store_dir, a, sid) if lost == "entry" else slot_object(store_dir, a, sid))
    c = make_daemon(url).start()
    wait_for(lambda: imports(c, code), timeout=30, what="the slot written again by a writer's follower")
    assert contents(c, sid) == [("user", "a1"), ("assistant", "b1")]
    b.client().append(sid, "assistant", "b2")  # c follows both writers
    wait_for(lambda: ("assistant", "b2") in contents(c, sid), timeout=30, what="c follows b")
    for d in (a, b, c):
        assert cli_json(d.home, "verify")["ok"]


def test_a_members_slot_written_again_after_a_restart_keeps_the_frozen_logs(make_daemon, store_dir):
    """The frozen logs (writers a rekey dropped) the rewritten slot carries come from this device's
    database, not from what this process read of the slot: a daemon restarted since keeps them."""
    url = "file://" + store_dir
    a, b, sid = shared(make_daemon, url)
    dropped = b.client().status()["device_id"]
    a.client().rekey(sid, drop=[dropped])  # b's log, as it stands, frozen in the new slot
    a.client().append(sid, "user", "a2")
    assert a.client().sync(sid, wait=True, timeout=30)["complete"]
    b.stop()
    a.restart()  # a has not read the slot since it started
    os.remove(slot_file(store_dir, a, sid))
    assert a.client().sync(sid, wait=True, timeout=30)["complete"]
    c = make_daemon(url).start()
    c.client().import_code(a.client().share(sid)["code"])
    assert contents(c, sid) == contents(a, sid) == [("user", "a1"), ("assistant", "b1"), ("user", "a2")]
    assert cli_json(c.home, "verify")["ok"]


def test_a_damaged_members_object_is_written_again_by_sync(make_daemon, store_dir):
    """The slot's object present but corrupted: verify says `sessiond sync` writes it again, and it does."""
    url = "file://" + store_dir
    a, b, sid = shared(make_daemon, url)
    with open(slot_object(store_dir, a, sid), "r+b") as f:  # a bit flipped in the middle of the object
        data = bytearray(f.read())
        data[len(data) // 2] ^= 0x01
        f.seek(0)
        f.write(data)
    res = run_cli(a.home, "verify", sid, "--json")
    assert res.returncode == 1, res.stdout
    (s,) = json.loads(res.stdout)["sessions"]
    assert any(p.startswith("members: ") for p in s["problems"]) and "sessiond sync" in s.get("repair", ""), s

    assert a.client().sync(sid, wait=True, timeout=30)["complete"]
    c = make_daemon(url).start()
    c.client().import_code(a.client().share(sid)["code"])
    assert contents(c, sid) == [("user", "a1"), ("assistant", "b1")]
    for d in (a, b, c):
        assert cli_json(d.home, "verify")["ok"]


def test_verify_on_a_device_that_cannot_write_the_slot_says_who_writes_it_again(make_daemon, store_dir):
    """A read-only device cannot write the slot again: verify says which devices can, and how."""
    url = "file://" + store_dir
    a, b, sid = shared(make_daemon, url)
    c = make_daemon(url).start()
    c.client().import_code(a.client().share(sid)["code"])  # read-only
    a.stop()  # (the writers away: their pulls would write the slot again at once)
    b.stop()
    os.remove(slot_file(store_dir, a, sid))
    res = run_cli(c.home, "verify", sid, "--json")
    assert res.returncode == 1, res.stdout
    (s,) = json.loads(res.stdout)["sessions"]
    assert any(p.startswith("members: ") for p in s["problems"]), s
    assert "`sessiond sync` on a device that wrote it" in s.get("repair", ""), s
