"""`sessiond rekey ID --drop C` cut by a kill -9 of the daemon mid-rekey and asked again (the natural thing after a
crash): the drop is finished from its record (sync/rekey.py), and the retry answers as the drop's success does, C
named in `dropped` and in `already_dropped` (nothing rekeyed again), not 422 `unknown_device` (found by
tests/test_crash_drop_loop.py); a device that never was a writer of the session is still refused so. A code issued
since the drop may have let C back in: the drop asked again then rotates the key (C dropped already, no one else)."""

from __future__ import annotations

import os
import subprocess

import pytest

from conftest import cli_json, popen_cli, run_cli, wait_for
from killing import session_key, shared_writers
from sessiond.client import ApiError


@pytest.mark.parametrize(
    ("point", "c_wrote"),
    [
        ("rekey.notice_put", True),
        ("rekey.published", True),
        ("rekey.rotated", True),
        ("rekey.announced", True),
        # C pushed nothing: no frozen log names it, the old slot of A's rekey does (found by the random kills)
        ("rekey.rotated", False),
    ],
)
def test_a_drop_killed_mid_rekey_and_asked_again_answers_the_drop(make_daemon, store_dir, tmp_path, point, c_wrote):
    a, b, sid = shared_writers(make_daemon, f"file://{store_dir}", "dropped")
    c = make_daemon(f"file://{store_dir}").start()
    c.client().import_code(a.client().share(sid, write=True)["code"])
    if c_wrote:
        c.client().append(sid, "user", "from c")
    assert c.client().sync(sid, wait=True, timeout=30)["complete"]
    b_id, c_id = (cli_json(d.home, "status")["device_id"] for d in (b, c))

    def c_read() -> bool:  # A has read C's log: it names C by its id
        a.client().sync(sid, wait=True, timeout=10)
        return any(dv["device"] == c_id and dv["writer"] for dv in a.client().devices(sid)["devices"])

    wait_for(c_read, timeout=30, what="A reads C's log")

    flag = str(tmp_path / "held")
    a.env["SESSIOND_TEST_PAUSE"] = f"{point}:{flag}"
    a.restart()
    rekey = popen_cli(["rekey", sid, "--drop", c_id, "--home", a.home], env=dict(os.environ), stdout=subprocess.PIPE)
    try:
        wait_for(lambda: os.path.exists(flag), timeout=30, what=f"A held at {point}")
        a.kill()  # the drop's answer never comes
    finally:
        rekey.kill()
        rekey.wait()
        rekey.stdout.close()
    a.env.pop("SESSIOND_TEST_PAUSE")
    a.start()

    res = cli_json(a.home, "rekey", sid, "--drop", c_id)  # asked again: the drop, finished, is its answer
    assert res["dropped"] == [c_id] and res["already_dropped"] == [c_id] and res["kept"] == [b_id], res
    key = session_key(a, sid)  # the drop's: asked again, nothing is rekeyed again
    out = run_cli(a.home, "rekey", sid, "--drop", c_id, check=True).stdout
    assert f"dropped already: {c_id}" in out, out
    res = a.client().rekey(sid, drop=[c_id])  # and through the API, again
    assert res["dropped"] == [c_id] and res["already_dropped"] == [c_id] and res["kept"] == [b_id], res
    assert session_key(a, sid) == key
    # a code issued since (C may hold it, as may any device): unshare --device C, asked again, rotates the key, the
    # code revoked with it, C named dropped already and no one else dropped (tests/test_rekey_drop_since.py)
    a.client().share(sid)
    res = a.client().unshare(sid, c_id)
    assert res["dropped"] == res["already_dropped"] == [c_id] and res["kept"] == [b_id], res
    assert res["codes_revoked"] == 1, res
    assert session_key(a, sid) != key

    for drop in (["notadevice"], [c_id, "notadevice"]):  # never a writer: refused, nothing rekeyed
        with pytest.raises(ApiError) as e:
            a.client().rekey(sid, drop=drop)
        assert e.value.status == 422 and e.value.code == "unknown_device", e.value
        assert "notadevice" in str(e.value) and c_id not in str(e.value).split("to drop")[0], e.value

    def told() -> bool:  # C learns it was dropped; B goes on with A
        c.client().sync(sid, wait=True, timeout=10)
        return c.client().get_session(sid)["access"] == "revoked"

    wait_for(told, timeout=30, what="C told it was revoked")
    b.client().append(sid, "user", "from b after")

    def b_arrived() -> bool:
        a.client().sync(sid, wait=True, timeout=10)
        return "from b after" in [m["content"] for m in a.client().messages(sid)["messages"]]

    wait_for(b_arrived, timeout=30, what="B's write after the drop on A")
