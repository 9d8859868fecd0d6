"""`rekey --drop C` asked again after this device's own rekey dropped C, when something since could have let C back in.

The retry after a kill (tests/test_rekey_drop_retry.py) answers "dropped already" and rotates nothing. That answer
was given too when a share code was issued here since the drop (C imported it, or may hold it), or when the store
served a members slot older than the one this device had read (C let back in by another writer's code, the slot
rolled back to before it): the user was told C was out while C read every later write. Now the key is rotated then
(dropping C and no one else), the answer still naming C dropped already; and C reads nothing written after."""

from __future__ import annotations

import os
import shutil

from conftest import cli_json, wait_for
from killing import session_key, shared_writers
from sessiond.client import ApiError
from sessiond.sync.members import announce_key


def _c_writer(make_daemon, url: str, name: str):
    a, b, sid = shared_writers(make_daemon, url, name)
    c = make_daemon(url).start()
    c.client().import_code(a.client().share(sid, write=True)["code"])
    c.client().append(sid, "user", "from c")
    assert c.client().sync(sid, wait=True, timeout=30)["complete"]
    b_id, c_id = (cli_json(d.home, "status")["device_id"] for d in (b, c))
    wait_for(lambda: _lists(a, sid, c_id), timeout=30, what="A lists C as a writer")
    return a, b, c, sid, b_id, c_id


def _lists(d, sid: str, device: str) -> bool:
    d.client().sync(sid, wait=True, timeout=10)
    return any(dv["device"] == device and dv["writer"] for dv in d.client().devices(sid)["devices"])


def _contents(d, sid: str) -> list[str]:
    return [m["content"] for m in d.client().messages(sid)["messages"]]


def c_reads_nothing_after(a, b, c, sid: str) -> None:
    """A and B write on after A's drop of C, B's write reaching A; C, pulling, reads neither (or is told revoked)."""
    a.client().append(sid, "user", "after the drop")
    assert a.client().sync(sid, wait=True, timeout=30)["complete"]
    b.client().append(sid, "user", "b after the drop")  # B goes on with A
    wait_for(
        lambda: a.client().sync(sid, wait=True, timeout=10) and "b after the drop" in _contents(a, sid),
        timeout=30,
        what="B's write after the drop on A",
    )

    def c_pulled() -> bool:
        try:
            c.client().sync(sid, wait=True, timeout=10)
        except ApiError:
            pass
        return c.client().get_session(sid)["access"] == "revoked" or "after the drop" in _contents(c, sid)

    wait_for(c_pulled, timeout=30, what="C pulls")
    assert "after the drop" not in _contents(c, sid)
    assert "b after the drop" not in _contents(c, sid)


def test_a_drop_asked_again_after_a_code_was_issued_since_rotates_the_key(make_daemon, store_dir):
    a, b, c, sid, b_id, c_id = _c_writer(make_daemon, f"file://{store_dir}", "code since")
    res = a.client().rekey(sid, drop=[c_id])
    assert res["dropped"] == [c_id] and res["kept"] == [b_id], res
    key = session_key(a, sid)
    res = a.client().rekey(sid, drop=[c_id])  # asked again, nothing since: the drop is its answer
    assert res["dropped"] == res["already_dropped"] == [c_id], res
    assert session_key(a, sid) == key

    c.client().import_code(a.client().share(sid)["code"])  # read-only, issued after the drop: C reads again
    res = a.client().rekey(sid, drop=[c_id])
    assert res["dropped"] == res["already_dropped"] == [c_id] and res["kept"] == [b_id], res
    assert session_key(a, sid) != key  # rotated: the code opens nothing written from now on
    c_reads_nothing_after(a, b, c, sid)


def test_a_drop_asked_again_over_a_members_slot_rolled_back_rotates_the_key(make_daemon, store_dir):
    """C let back in by B's code (a writer again, in the slot A read); the store then serves the slot as A's drop
    left it, C not in it. A's `rekey --drop C` took the stale slot's word and answered dropped already."""
    a, b, c, sid, b_id, c_id = _c_writer(make_daemon, f"file://{store_dir}", "rolled back")
    a.client().rekey(sid, drop=[c_id])
    key = session_key(a, sid)
    wait_for(
        lambda: b.client().sync(sid, wait=True, timeout=10) and session_key(b, sid) == key,
        timeout=30,
        what="B takes A's rekey",
    )
    assert a.client().sync(sid, wait=True, timeout=30)["complete"]
    with open(os.path.join(a.home, "keys", "sessions", f"{sid}.write"), "rb") as f:
        slot = os.path.join(store_dir, "heads", (b"\xed" + bytes(announce_key(f.read()).verify_key)).hex())
    old = f"{slot}.old-{os.getpid()}"
    shutil.copyfile(slot, old)

    c.client().import_code(b.client().share(sid, write=True)["code"])  # B lets C back in
    c.client().append(sid, "user", "c back")
    assert c.client().sync(sid, wait=True, timeout=30)["complete"]
    wait_for(lambda: _lists(a, sid, c_id), timeout=30, what="A lists C as a writer again")
    os.replace(old, slot)  # the store serves the slot from before C came back

    res = a.client().rekey(sid, drop=[c_id])
    assert c_id in res["dropped"] and session_key(a, sid) != key, res
    c_reads_nothing_after(a, b, c, sid)


def test_a_drop_asked_again_after_the_rotation_it_made_for_a_code_since_rotates_no_more(make_daemon, store_dir):
    """The drop asked again after a code was issued since rotates the key (above); asked once more, nothing issued
    since that rotation, it is the answer: C was not boxed the key it made (C no writer then). It rotated at every
    ask (its check found C dropped only by the first rekey, not by the one that made the current key). A code
    issued after that rotation has the next ask rotate again."""
    a, b, c, sid, b_id, c_id = _c_writer(make_daemon, f"file://{store_dir}", "asked once more")
    a.client().rekey(sid, drop=[c_id])
    c.client().import_code(a.client().share(sid)["code"])  # read-only, issued after the drop
    res = a.client().rekey(sid, drop=[c_id])  # rotates: the code opens nothing written from now on
    key = session_key(a, sid)
    res = a.client().rekey(sid, drop=[c_id])
    # main: rotated again, and at every further ask
    assert res["dropped"] == res["already_dropped"] == [c_id] and res["kept"] == [b_id], res
    assert session_key(a, sid) == key

    a.client().share(sid)  # a code issued since this rotation (C may hold it): the next ask rotates
    res = a.client().rekey(sid, drop=[c_id])
    assert res["dropped"] == res["already_dropped"] == [c_id] and res["kept"] == [b_id], res
    assert session_key(a, sid) != key
    c_reads_nothing_after(a, b, c, sid)
