"""kill -9 of a device in the middle of its rekey, at the step that leaves the other devices a code of a key its
creator's log is not yet readable under: A's rekey killed once its new members slot is written, its own log not yet
pushed under the new key (`rekey.announced`). B takes the rekey and makes a code (`share`: it syncs, then reads the
key, the members slot and the write secret together); C, a writer holding the session under the old key, imports it:
refused as a wait (A's log, which holds the creation, not readable under the new key yet), not as another session;
C's sync takes the rekey, and the code imports. After A's restart: every acknowledged message on every device,
`sync --wait`, verify and doctor clean, and a code made after the restart imports on a new device."""

from __future__ import annotations

import os
import subprocess

import pytest

from conftest import popen_cli, wait_for, write_config
from killing import converge, shared_writers
from sessiond.client import ApiError


def _arrived(flag: str) -> None:
    wait_for(lambda: os.path.exists(flag), timeout=20, what=f"the daemon held at {os.path.basename(flag)}")


def killed_at(a, sid: str, point: str, flag: str) -> None:
    """A (a daemon, started) rekeys `sid`, held at `point` and killed there (kill -9); not started again."""
    a.env["SESSIOND_TEST_PAUSE"] = f"{point}:{flag}"
    a.restart()
    rekey = popen_cli(["rekey", sid, "--home", a.home], env=dict(os.environ), stdout=subprocess.DEVNULL)
    try:
        _arrived(flag)
        a.kill()
    finally:
        rekey.kill()
        rekey.wait()
    a.env.pop("SESSIOND_TEST_PAUSE")


def test_a_code_made_while_the_rekeying_creator_is_down_imports_on_a_writer_under_the_old_key(
    make_daemon, store_dir, tmp_path
):
    url = f"file://{store_dir}"
    a, b, sid = shared_writers(make_daemon, url, "rekeyed away")
    c = make_daemon(url)
    write_config(c.home, poll_interval=3600, sync_interval=3600)  # C pulls only when asked: not the rekey before
    c.start()  # the import below
    c.client().import_code(b.client().share(sid, write=True)["code"])
    c.client().append(sid, "user", "from c")
    assert c.client().sync(sid, wait=True, timeout=30)["complete"]
    acked = ["first", "from c"]
    wait_for(lambda: a.client().sync(sid, wait=True, timeout=10) and len(a.client().messages(sid)["messages"]) == 2)

    killed_at(a, sid, "rekey.announced", str(tmp_path / "announced"))
    assert b.client().sync(sid, wait=True, timeout=30)  # B takes A's rekey
    code = b.client().share(sid, write=True)["code"]
    # A's log not readable under the new key yet: C cannot tell the code's session its own (was: refused as "a
    # different session with id ... already exists on this device", and told to delete it); said as a wait, and
    # C, kept in the rekey, takes it at its sync, and the code imports
    with pytest.raises(ApiError) as refused:
        c.client().import_code(code)
    assert refused.value.code == "busy" and "sync --wait" in str(refused.value), refused.value
    assert c.client().sync(sid, wait=True, timeout=30)
    c.client().import_code(code)
    c.client().append(sid, "user", "c after")
    acked.append("c after")

    a.start()
    converge([a, b, c], sid, acked, timeout=60)
    d = make_daemon(url).start()
    d.client().import_code(b.client().share(sid, write=True)["code"])
    converge([a, b, c, d], sid, acked, timeout=60)
