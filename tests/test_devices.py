"""`sessiond devices ID` (GET /v1/sessions/{id}/devices): the devices of a shared session as this daemon
knows them, so that `unshare --device D` has its D: two real daemons sharing a session through a folder
store (and a read-only follower), each listing every device from its own side."""

from __future__ import annotations

import json

import pytest

from conftest import cli_json, run_cli, wait_for
from sessiond.client import ApiError


@pytest.fixture
def trio(make_daemon, store_dir):
    url = "file://" + store_dir
    return make_daemon(url).start(), make_daemon(url).start(), make_daemon(url).start()


def _count(d, sid) -> int:
    return d.client().get_session(sid)["message_count"]


def _by_device(res: dict) -> dict:
    return {d["device"]: d for d in res["devices"]}


def test_each_side_lists_the_session_s_devices(trio):
    a, b, c = trio
    ca, cb, cc = a.client(), b.client(), c.client()
    ida, idb, idc = (x.client().status()["device_id"] for x in trio)
    sid = ca.create_session(name="shared")["id"]
    alone = ca.devices(sid)  # not shared yet: this device alone
    assert alone["session"] == sid and alone["shared"] is False
    assert [(d["device"], d["this_device"], d["writer"]) for d in alone["devices"]] == [(ida, True, True)]

    ca.append_many(sid, [{"role": "user", "content": f"a{i}"} for i in range(3)])
    cb.import_code(ca.share(sid, write=True)["code"])
    cc.import_code(ca.share(sid)["code"])  # read-only: never a writer, so in no one's list but its own
    cb.append_many(sid, [{"role": "assistant", "content": f"b{i}"} for i in range(2)])
    for d in trio:
        wait_for(lambda d=d: _count(d, sid) == 5, timeout=30, what="both devices' messages everywhere")

    for me, other, client in ((ida, idb, ca), (idb, ida, cb)):
        res = client.devices(sid)
        assert res["session"] == sid and res["shared"] is True
        devs = _by_device(res)
        assert set(devs) == {ida, idb}, res
        assert res["devices"][0]["device"] == me  # this device first
        assert devs[me]["this_device"] and not devs[other]["this_device"]
        assert devs[ida]["writer"] and devs[idb]["writer"], res
        assert devs[ida]["messages"] == 3 and devs[idb]["messages"] == 2
        assert devs[other]["followed"] and not devs[me]["followed"]
        for d in devs.values():
            assert d["last_message_at"] is not None and d["last_seen"] >= d["last_message_at"]
    last_b = max(m["created_at"] for m in cb.messages(sid)["messages"] if m["content"].startswith("b"))
    assert _by_device(ca.devices(sid))[idb]["last_message_at"] == pytest.approx(last_b, abs=1e-3)

    res = cc.devices(sid)  # the read-only follower: both writers, and itself, which is none
    devs = _by_device(res)
    assert set(devs) == {ida, idb, idc}
    assert devs[idc]["this_device"] and not devs[idc]["writer"] and devs[idc]["messages"] == 0
    assert devs[ida]["writer"] and devs[idb]["writer"] and devs[ida]["followed"] and devs[idb]["followed"]

    # the CLI: a table by default, naming each device; --json the API's answer
    out = run_cli(a.home, "devices", sid, check=True).stdout
    assert "DEVICE" in out and ida in out and idb in out and "this device" in out, out
    assert cli_json(a.home, "devices", sid)["devices"] == ca.devices(sid)["devices"]
    # after a restart, before (or after) its follower reads the members slot again: the same answer
    b.restart()
    devs = _by_device(b.client().devices(sid))
    assert set(devs) == {ida, idb} and devs[ida]["writer"] and devs[idb]["writer"] and devs[idb]["this_device"]

    # what unshare's help sends the user to, and its D does what it says
    assert "sessiond devices ID" in run_cli(a.home, "unshare", "--help", check=True).stdout
    assert ca.unshare(sid, idb)["dropped"] == [idb]


def test_devices_of_an_unknown_session_is_404(daemon):
    c = daemon.client()
    with pytest.raises(ApiError) as e:
        c.devices("no-such-session")
    assert e.value.status == 404 and e.value.code == "not_found"
    res = run_cli(daemon.home, "devices", "no-such-session", "--json")
    assert res.returncode == 1 and json.loads(res.stdout)["error"]["code"] == "not_found"


def test_devices_help_says_what_last_seen_is(tmp_path):
    """ "last seen" is the time of the device's latest write held here, as its own clock stamped it: not
    when it last ran, pulled or was online (a device that only reads is never seen). The help said only
    "last seen"."""
    out = " ".join(run_cli(str(tmp_path / "home"), "devices", "--help", check=True).stdout.split())
    assert "last seen: the time of its latest write held here, by its own clock" in out, out


def test_a_device_dropped_by_a_rekey_does_not_list_itself_as_a_writer(trio):
    """A writer that `unshare --device` dropped learns it at its next pull (`show`: access revoked); its
    `devices` then said of itself `writer`, from the members slot it last read (under the key it lost),
    while every change it tries is refused as revoked."""
    a, b, _ = trio
    ca, cb = a.client(), b.client()
    sid = ca.create_session(name="dropped")["id"]
    ca.append(sid, "user", "hello")
    cb.import_code(ca.share(sid, write=True)["code"])
    cb.append(sid, "user", "b writes")
    cb.sync(sid, wait=True)
    idb = cb.status()["device_id"]
    assert _by_device(cb.devices(sid))[idb]["writer"]

    ca.unshare(sid, idb)
    cb.sync(sid, wait=True, timeout=20)
    assert cb.get_session(sid)["access"] == "revoked"

    mine = _by_device(cb.devices(sid))[idb]
    assert not mine["writer"], mine
    assert mine["frozen"], mine
    text = run_cli(b.home, "devices", sid, check=True).stdout
    line = next(x for x in text.splitlines() if "(this device)" in x)
    assert "dropped by a rekey" in line and "writer" not in line.replace("(this device)", ""), text
