"""`rekey --drop C` on a device that took another device's rekey which dropped C, a writer that never pushed.

C joined the members slot (a read-write code imported) and wrote nothing; B's rekey dropped it, so no frozen log
names it, and A, taking B's rekey, had no trace of it left: A's `rekey --drop C` was refused as `unknown_device`,
which told a user who had seen C among the writers nothing true (C was shut out already: it reads nothing written
since B's rekey). It answers as the drop does, C dropped already, and rekeys (dropping no one else: another
device's rekey does not tell that C reads nothing now, the second test). A device that never was a
writer is refused still, the answer saying what such a device can read and what shuts it out."""

from __future__ import annotations

import pytest

from conftest import cli_json, wait_for
from killing import session_key, shared_writers
from sessiond.client import ApiError
from test_rekey_drop_since import c_reads_nothing_after


def _c_a_writer_that_never_writes(make_daemon, store_dir: str, name: str):
    """A and B writing a shared session, C let in as a writer that never writes, listed as one on A and B:
    (a, b, c, sid, C's device id)."""
    url = f"file://{store_dir}"
    a, b, sid = shared_writers(make_daemon, url, name)
    c = make_daemon(url).start()
    c.client().import_code(a.client().share(sid, write=True)["code"])  # a writer that never writes
    c_id = cli_json(c.home, "status")["device_id"]

    def lists_c(d) -> bool:
        d.client().sync(sid, wait=True, timeout=10)
        return any(dv["device"] == c_id and dv["writer"] for dv in d.client().devices(sid)["devices"])

    for d in (a, b):
        wait_for(lambda d=d: lists_c(d), timeout=30, what="C listed as a writer")
    return a, b, c, sid, c_id


def test_a_drop_of_a_writer_another_device_dropped_before_it_wrote_answers_dropped_already(make_daemon, store_dir):
    a, b, c, sid, c_id = _c_a_writer_that_never_writes(make_daemon, store_dir, "unseen")
    old = session_key(a, sid)
    b.client().rekey(sid, drop=[c_id])

    def a_took() -> bool:
        a.client().sync(sid, wait=True, timeout=10)
        return session_key(a, sid) != old

    wait_for(a_took, timeout=30, what="A takes B's rekey")
    key = session_key(a, sid)
    res = a.client().rekey(sid, drop=[c_id])  # seen as a writer here before: dropped already, by B's rekey
    assert res["dropped"] == res["already_dropped"] == [c_id], res
    assert session_key(a, sid) != key  # rekeyed all the same: B's rekey is no proof of what C reads now (below)
    key = session_key(a, sid)

    with pytest.raises(ApiError) as e:  # never a writer: refused, saying what such a device reads
        a.client().rekey(sid, drop=["notadevice"])
    assert e.value.status == 422 and e.value.code == "unknown_device", e.value
    assert "notadevice" in str(e.value) and f"sessiond rekey {sid}" in str(e.value), e.value
    assert session_key(a, sid) == key


def test_a_drop_answered_from_another_devices_rekey_shuts_the_device_out(make_daemon, store_dir):
    """What another device's log and the old slots it leads to say is no proof that a device reads nothing new: a
    current writer can write them (a slot of its own making, a claim in its own log), and C, dropped by B before it
    wrote, may have been given a read-only code since (as here: one the user of A made and forgot). A's `rekey
    --drop C` answered "dropped already" and rekeyed nothing: C read what was written after it. A drop found only
    by another device's rekey rekeys (dropping no one else): the answer names C dropped already, and C is out."""
    a, b, c, sid, c_id = _c_a_writer_that_never_writes(make_daemon, store_dir, "unseen read")
    old = session_key(a, sid)
    b.client().rekey(sid, drop=[c_id])
    wait_for(
        lambda: a.client().sync(sid, wait=True, timeout=10) and session_key(a, sid) != old,
        timeout=30,
        what="A takes B's rekey",
    )
    c.client().import_code(a.client().share(sid)["code"])  # read-only, after C was dropped
    res = a.client().rekey(sid, drop=[c_id])
    assert res["dropped"] == res["already_dropped"] == [c_id], res
    c_reads_nothing_after(a, b, c, sid)
