"""Session semantics found in review: changing a chat after it is made (and seeing it on another device),
clearing a setting from the CLI, yes/no query parameters read strictly, no duplicate checkpoint, and the
times of a fork's copied messages. Real daemons as processes, over their sockets; two of them share a
folder store where a change must travel."""

from __future__ import annotations

import json
import os
import shutil
import tempfile

import pytest

from conftest import DaemonProc, UnixHTTP


@pytest.fixture(scope="module")
def d():
    """One daemon for the tests of this module that need no store of their own."""
    tmp = tempfile.mkdtemp(prefix="sd-sem-")
    proc = DaemonProc(os.path.join(tmp, "home")).start()
    yield proc
    proc.stop()
    shutil.rmtree(tmp, ignore_errors=True)


def raw(daemon: DaemonProc, method: str, path: str, body: object = None) -> tuple[int, dict | None]:
    c = UnixHTTP(daemon.socket, timeout=10)
    c.request(
        method, path, body=None if body is None else json.dumps(body), headers={"Content-Type": "application/json"}
    )
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, (json.loads(data) if data else None)


# --------------------------------------------------------------------- yes/no query parameters
def test_yes_no_query_parameters_take_true_false_1_0_and_refuse_the_rest(d):
    c = d.client()
    sid = c.create_session()["id"]
    c.create_chat(sid, id="side")
    c.append(sid, "user", "in main")
    c.append(sid, "user", "in side", chat="side")
    base = f"/v1/sessions/{sid}/messages"
    for value, count in (("true", 2), ("1", 2), ("false", 1), ("0", 1)):
        status, out = raw(d, "GET", f"{base}?all={value}")
        assert status == 200 and len(out["messages"]) == count, (value, out)
    for value in ("maybe", "yes", "TRUE", "", "2"):
        status, out = raw(d, "GET", f"{base}?all={value}")
        assert status == 400, (value, status, out)
        err = out["error"]
        assert err["code"] == "bad_parameter"
        assert "all" in err["message"] and "true, false, 1 or 0" in err["message"], err
    # every route's yes/no parameters: the doctor's verify too
    for value in ("false", "0"):
        status, out = raw(d, "GET", f"/v1/doctor?verify={value}")
        assert status == 200 and not any(f["check"].startswith("verify") for f in out["findings"]), out
    status, out = raw(d, "GET", "/v1/doctor?verify=1")
    assert status == 200 and any(f["check"] == "verify" for f in out["findings"]), out
    status, out = raw(d, "GET", "/v1/doctor?verify=nope")
    assert status == 400 and "verify" in out["error"]["message"] and "1 or 0" in out["error"]["message"]
    # the OpenAPI document says which values it takes
    doc = c.openapi()
    params = {p["name"]: p for p in doc["paths"]["/v1/sessions/{id}/messages"]["get"]["parameters"]}
    assert sorted(params["all"]["schema"]["enum"]) == ["0", "1", "false", "true"]


# --------------------------------------------------------------------------------- checkpoints
def test_end_right_after_a_checkpoint_writes_no_second_identical_one(d):
    c = d.client()
    sid = c.create_session()["id"]
    c.append(sid, "user", "hello", tokens=3)
    first = c.checkpoint(sid)
    again = c.checkpoint(sid)  # nothing new: the same one answers
    assert again == first
    ended = c.end(sid)
    assert [cp["number"] for cp in ended["checkpoints"]] == [first["number"]], ended["checkpoints"]
    assert c.checkpoints(sid)["checkpoints"] == [first]
    # a message since the latest one: the end does checkpoint it
    sid2 = c.create_session()["id"]
    c.append(sid2, "user", "one", tokens=2)
    cp = c.checkpoint(sid2)
    c.append(sid2, "user", "two", tokens=2)
    cps = c.end(sid2)["checkpoints"]
    assert [x["messages"] for x in cps] == [1, 2] and cps[0] == cp
