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
    assert {head_key(a, sid), head_key(b, sid)} <= set(second["heads"]), s  # both logs' heads, and the slot's
    assert len(second["heads"]) == 3 and second["objects"], s
    lost = [p for p in s["problems"] if two in p]
    assert len(lost) == 3, s["problems"]  # this device's log, the members slot, b's log
    b_id = cb.status()["device_id"]
    assert any(b_id in p and f"`sessiond sync` on device {b_id}" in p for p in lost), lost
    assert "sessiond sync" in s["repair"], s
    text = run_cli(a.home, "verify", sid).stdout
    assert f"store {two} lacks this device's log" in text, text

    res = run_cli(a.home, "doctor", "--json")
    assert res.returncode == 1, res.stdout
    (found,) = [f for f in json.loads(res.stdout)["findings"] if f["check"] == "verify"]
    assert found["level"] == "problem" and two in found["message"], found
    assert f"sessiond sync --wait {sid}" in found["fix"] and b_id in found["fix"], found

    # what verify says to run brings every store back whole
    assert ca.sync(sid, wait=True, timeout=30)["complete"]
    res = run_cli(a.home, "verify", sid, "--json")
    (s,) = json.loads(res.stdout)["sessions"]
    assert [p for p in s["problems"] if two in p] == [p for p in lost if b_id in p], s  # only b's log is left
    assert cb.sync(sid, wait=True, timeout=30)["complete"]
    rep = cli_json(a.home, "verify", sid)
    assert rep["ok"] and all(st["ok"] for st in rep["sessions"][0]["stores"]), rep
