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


def test_verify_names_what_one_store_of_a_mirror_lost_and_sync_refills_it(make_daemon, tmp_path):
    one, two = f"file://{tmp_path / 'one'}", f"file://{tmp_path / 'two'}"
    a = make_daemon([one, two]).start()
    b = make_daemon([one, two]).start()
    ca, cb = a.client(), b.client()
    sid = ca.create_session(name="twice")["id"]
    ca.append(sid, "user", "a1")
    cb.import_code(ca.share(sid, write=True)["code"])
    cb.append(sid, "assistant", "b1")
    assert cb.sync(sid, wait=True, timeout=30)["complete"]
    assert ca.sync(sid, wait=True, timeout=30)["complete"]
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
    assert head_key(a, sid) in second["heads"], s  # this device's log's head, and the slot's
    assert len(second["heads"]) == 2 and second["objects"], s
    lost = [p for p in s["problems"] if two in p]
    assert len(lost) == 2, s["problems"]  # this device's log, the members slot
    # b's log, none of it left in two, one holding it whole: as a log b never pushed to two (tests/
    # test_mirror_verify_apart.py), a note saying what sends it there again if b names two
    b_id = cb.status()["device_id"]
    assert second["not_held"] == [b_id] and not [p for p in s["problems"] if b_id in p], s
    (note,) = s["notes"]
    assert f"device {b_id}'s log is in {one}, not in {two}" in note, note
    assert f"`sessiond sync` on device {b_id} sends it there" in note, note
    assert "sessiond sync" in s["repair"], s
    text = run_cli(a.home, "verify", sid).stdout
    assert f"store {two} lacks this device's log" in text and f"note: device {b_id}'s log" in text, text

    res = run_cli(a.home, "doctor", "--json")
    assert res.returncode == 1, res.stdout
    found, noted = [f for f in json.loads(res.stdout)["findings"] if f["check"] == "verify"]
    assert found["level"] == "problem" and two in found["message"], found
    assert found["fix"].startswith("sessiond sync ") and f"--wait {sid}" in found["fix"], found
    assert noted["level"] == "ok" and note in noted["message"], noted

    # what verify says to run brings every store back whole
    assert ca.sync(sid, wait=True, timeout=30)["complete"]
    res = run_cli(a.home, "verify", sid, "--json")
    assert res.returncode == 0, res.stdout
    (s,) = json.loads(res.stdout)["sessions"]
    assert s["ok"] and s["notes"] == [note] and not s["problems"], s  # only b's log is left out of two
    assert cb.sync(sid, wait=True, timeout=30)["complete"]
    rep = cli_json(a.home, "verify", sid)
    assert "notes" not in rep["sessions"][0], rep
    assert rep["ok"] and all(st["ok"] for st in rep["sessions"][0]["stores"]), rep
