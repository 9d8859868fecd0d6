"""`verify` (and doctor's) through a mirror checks each of its stores: a read through the mirror finds every
object and head in whichever store has it, so a store that lost data showed nowhere, and a user who
configured two stores to hold two copies was told all was well while one copy was gone."""

from __future__ import annotations

import json
import os

from conftest import cli_json, run_cli
from sessiond.sync.keys import KeyStore


def head_key(d, sid: str) -> str:
    return KeyStore(os.path.join(d.home, "keys")).head_pk(sid).hex()


def wipe(root) -> None:
    """The store loses all it held (its disk replaced, its folder emptied)."""
    for r, _dirs, files in os.walk(root):
        for f in files:
            os.remove(os.path.join(r, f))


def _shared_on(make_daemon, stores: list[str], name: str):
    """A and B (imported, read-write) on the mirror `stores`, a session of A's each wrote to and synced: (a, b, id)."""
    a, b = make_daemon(stores).start(), make_daemon(stores).start()
    ca, cb = a.client(), b.client()
    sid = ca.create_session(name=name)["id"]
    ca.append(sid, "user", "a1")
    cb.import_code(ca.share(sid, write=True)["code"])
    cb.append(sid, "assistant", "b1")
    assert cb.sync(sid, wait=True, timeout=30)["complete"]
    assert ca.sync(sid, wait=True, timeout=30)["complete"]
    return a, b, sid


def test_verify_names_what_one_store_of_a_mirror_lost_and_sync_refills_it(make_daemon, tmp_path):
    one, two = f"file://{tmp_path / 'one'}", f"file://{tmp_path / 'two'}"
    a, b, sid = _shared_on(make_daemon, [one, two], "twice")
    ca, cb = a.client(), b.client()
    rep = cli_json(a.home, "verify", sid)
    assert rep["ok"], rep
    assert rep["sessions"][0]["stores"] == [{"url": one, "ok": True}, {"url": two, "ok": True}], rep

    wipe(tmp_path / "two")
    res = run_cli(a.home, "verify", sid, "--json")
    assert res.returncode == 1, res.stdout
    (s,) = json.loads(res.stdout)["sessions"]
    assert not s["ok"], s
    first, second = s["stores"]
    assert first == {"url": one, "ok": True}, s
    assert second["url"] == two and second["ok"] is False, s
    assert head_key(a, sid) in second["heads"], s  # this device's log's head, the slot's, and b's
    assert head_key(b, sid) in second["heads"] and len(second["heads"]) == 3 and second["objects"], s
    # b's log, none of it left in two, one holding it whole: the first verify saw it in two, so two lost it (main:
    # a note, as for a log b never pushed to two, tests/test_mirror_verify_apart.py, and exit 1 for a's log only)
    b_id = cb.status()["device_id"]
    assert "not_held" not in second and "notes" not in s, s
    lost = [p for p in s["problems"] if two in p]
    assert len(lost) == 3, s["problems"]  # this device's log, the members slot, b's log
    (b_lost,) = [p for p in lost if b_id in p]
    assert b_lost.startswith(f"store {two} lacks device {b_id}'s log, which it held before ("), b_lost
    assert b_lost.endswith(f"`sessiond sync` on device {b_id} sends it again"), b_lost
    assert s["elsewhere"] == [b_id], s
    assert "`sessiond sync` sends what this device wrote" in s["repair"], s
    assert f"`sessiond sync` on device(s) {b_id} sends what they wrote" in s["repair"], s
    text = run_cli(a.home, "verify", sid).stdout
    assert f"store {two} lacks this device's log" in text and f"lacks device {b_id}'s log, which it held" in text, text

    res = run_cli(a.home, "doctor", "--json")
    assert res.returncode == 1, res.stdout
    (found,) = [f for f in json.loads(res.stdout)["findings"] if f["check"] == "verify"]
    assert found["level"] == "problem" and two in found["message"] and b_id in found["message"], found
    assert found["fix"].startswith("sessiond sync ") and f"--wait {sid}" in found["fix"], found

    # what verify says to run brings every store back whole: this device's sync its own log and the slot, b's its
    assert ca.sync(sid, wait=True, timeout=30)["complete"]
    res = run_cli(a.home, "verify", sid, "--json")
    assert res.returncode == 1, res.stdout
    (s,) = json.loads(res.stdout)["sessions"]
    assert [p for p in s["problems"] if two in p] == [b_lost], s  # only b's log is left out of two
    assert cb.sync(sid, wait=True, timeout=30)["complete"]
    rep = cli_json(a.home, "verify", sid)
    assert "notes" not in rep["sessions"][0], rep
    assert rep["ok"] and all(st["ok"] for st in rep["sessions"][0]["stores"]), rep


def test_a_store_seen_holding_another_device_s_log_before_a_restart_lost_it_after(make_daemon, tmp_path):
    """Which stores of a mirror were seen holding another device's log is kept in the database (table logs_seen,
    migration 30): seen at a verify before a kill -9, and found holding none of it after, the store lost it."""
    one, two = f"file://{tmp_path / 'one'}", f"file://{tmp_path / 'two'}"
    a, b, sid = _shared_on(make_daemon, [one, two], "seen")
    cb = b.client()
    assert cli_json(a.home, "verify", sid)["ok"]
    a.kill()
    a.start()
    wipe(tmp_path / "two")
    res = run_cli(a.home, "verify", sid, "--json")
    assert res.returncode == 1, res.stdout
    (s,) = json.loads(res.stdout)["sessions"]
    b_id = cb.status()["device_id"]
    assert "notes" not in s and "not_held" not in s["stores"][1], s
    assert any(p.startswith(f"store {two} lacks device {b_id}'s log, which it held before") for p in s["problems"]), s


def test_a_store_that_lost_another_device_s_log_after_a_sync_alone_is_caught(make_daemon, tmp_path):
    """`logs_seen` was filled by `verify` alone: a mirror store that lost all of another device's log it held,
    after normal syncs and never a verify here, was taken for one the device never pushed to (a note, verify
    ok, doctor silent). A pull reading that device's head through the mirror (which asks every store anyway)
    notes the stores that hold it at the revision read: the store that lost it is found so, naming the store
    and `sessiond sync` on that device."""
    one, two = f"file://{tmp_path / 'one'}", f"file://{tmp_path / 'two'}"
    a, b = make_daemon([one, two]).start(), make_daemon([one, two]).start()
    ca, cb = a.client(), b.client()
    sid = ca.create_session(name="synced")["id"]
    ca.append(sid, "user", "a1")
    cb.import_code(ca.share(sid, write=True)["code"])
    assert ca.sync(sid, wait=True, timeout=30)["complete"]
    assert cb.sync(sid, wait=True, timeout=30)["complete"]
    before = {os.path.join(r, f) for r, _dirs, files in os.walk(tmp_path / "two") for f in files}
    cb.append(sid, "assistant", "b1")
    assert cb.sync(sid, wait=True, timeout=30)["complete"]
    b_files = {os.path.join(r, f) for r, _dirs, files in os.walk(tmp_path / "two") for f in files} - before
    assert ca.sync(sid, wait=True, timeout=30)["complete"]  # a's pull reads b's head (a1, b1 here)
    assert [m["content"] for m in ca.messages(sid)["messages"]] == ["a1", "b1"]
    bpk = head_key(b, sid)
    assert any(bpk in f for f in b_files), sorted(b_files)  # (b's head, and its log's objects)
    for f in b_files:  # two loses all of b's log: its head and every object b's pushes put there
        if "/heads/" in f and bpk not in f:
            continue  # (a members slot b may have written is not b's log)
        os.remove(f)
    b_id = cb.status()["device_id"]
    res = run_cli(a.home, "verify", sid, "--json")
    assert res.returncode == 1, res.stdout  # main: 0, a note that b pushes to the stores it names
    (s,) = json.loads(res.stdout)["sessions"]
    assert "notes" not in s, s
    assert any(p.startswith(f"store {two} lacks device {b_id}'s log, which it held before") for p in s["problems"]), s
    res = run_cli(a.home, "doctor", "--json")
    assert res.returncode == 1, res.stdout
    (found,) = [f for f in json.loads(res.stdout)["findings"] if f["check"] == "verify"]
    assert found["level"] == "problem" and two in found["message"] and b_id in found["message"], found
    assert f"`sessiond sync` on device {b_id} sends it again" in found["message"], found
    assert found["fix"].endswith(f"on device(s) {b_id}"), found
