"""kill -9 at each step of `unshare --device` (a rekey that drops one writer: the pending record, the claim,
the notice in the old members slot, the new key, the new slot): after the restart the rekey is finished
without the user running anything, the writer it kept follows the new key, the one it dropped is revoked
and reads nothing written since, and verify and doctor are clean. (tests/test_merge.py kills a rekey that
keeps every writer at the same steps.) SESSIOND_CRASH_AT names the point where the daemon dies."""

from __future__ import annotations

import os

import pytest

from conftest import cli_json, run_cli, wait_for

STEPS = ("rekey:pending", "rekey:claimed", "rekey:published", "rekey:rotated", "rekey:switched", "rekey:announced")


def _messages(d, sid: str) -> list[str]:
    return [m["content"] for m in d.client().messages(sid, limit=10_000)["messages"]]


def _key(d, sid: str) -> bytes:
    with open(os.path.join(d.home, "keys", "sessions", sid + ".key"), "rb") as f:
        return f.read()


@pytest.mark.parametrize("step", STEPS)
def test_an_unshare_of_a_device_killed_at_any_step_drops_it_after_the_restart(make_daemon, store_dir, step):
    url = f"file://{store_dir}"
    a, kept, dropped = (make_daemon(url).start() for _ in range(3))
    sid = a.client().create_session(name="unshared")["id"]
    a.client().append(sid, "user", "before")
    code = a.client().share(sid, write=True)["code"]
    for d in (kept, dropped):
        d.client().import_code(code)
        d.client().append(sid, "assistant", f"{d.home} joins")  # its push makes it a member (a writer)
        d.client().sync(wait=True)
    wait_for(lambda: len(_messages(a, sid)) == 3, timeout=15, what="both writers' messages on A")
    old = _key(a, sid)
    gone = cli_json(dropped.home, "status")["device_id"]
    a.env["SESSIOND_CRASH_AT"] = step
    a.restart()
    res = run_cli(a.home, "unshare", sid, "--device", gone, "--json")
    assert res.returncode != 0, res.stdout  # the daemon died in the middle: not acknowledged
    assert a.proc.wait(10) == 137
    a.env.pop("SESSIOND_CRASH_AT")
    a.start()
    wait_for(lambda: _key(a, sid) != old, timeout=15, what="the rekey finished at the start")
    a.client().append(sid, "user", "after the unshare")
    wait_for(lambda: "after the unshare" in _messages(kept, sid), timeout=20, what="the kept writer following")
    assert _key(kept, sid) == _key(a, sid)
    kept.client().append(sid, "assistant", "kept after")
    wait_for(lambda: "kept after" in _messages(a, sid), timeout=20)

    def revoked() -> bool:
        dropped.client().sync(sid, wait=True, timeout=10)
        return dropped.client().get_session(sid)["access"] == "revoked"

    wait_for(revoked, timeout=20, what="the dropped writer told it is out")
    assert _key(dropped, sid) == old
    assert "after the unshare" not in _messages(dropped, sid)
    assert _messages(a, sid) == _messages(kept, sid)
    for d in (a, kept):
        assert cli_json(d.home, "verify")["ok"], d.home
        assert run_cli(d.home, "doctor", "--json").returncode == 0, d.home
