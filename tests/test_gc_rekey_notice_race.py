"""A `gc --grace 0` that listed a rekey's notice as a candidate (put, the old members slot not naming it yet) and
came to free it only once the rekey had named it and switched to the new slot freed it: gc read the heads of
the session as they stood then, the new slot's, which do not name the notice, and freed what its list, made
before, still held, though the notice was no candidate any more. The other writer, not past the rekey yet,
found its members slot lost, wrote it again without the notice, and never took the new key: every pull of
the session failed for good ("the log of device A is damaged"), and nothing either device wrote afterwards
reached the other (found by tests/test_crash_gc_rekey_loop.py). A candidate named since gc listed it stays."""

from __future__ import annotations

import asyncio
import os
import subprocess

from conftest import cli_json, popen_cli, wait_for
from killing import contents, session_key
from sessiond.stores import FileStore
from test_crash_rekey_loop import shared_pair


def _arrived(flag: str) -> None:
    wait_for(lambda: os.path.exists(flag), timeout=20, what=f"the daemon held at {os.path.basename(flag)}")


def _slots_lacking(folder: str) -> list[str]:
    """The members slots (and heads) of the folder store whose entry names an object the store does not hold."""

    async def lacking() -> list[str]:
        store = FileStore(folder, create=False)
        out = []
        for name in sorted(os.listdir(os.path.join(folder, "heads"))):
            if name.startswith("."):
                continue
            entry = await store.get_head(bytes.fromhex(name))
            if entry is not None and entry.data[:1] == b"\x1e" and not await store.has(bytes(entry.data[1:33])):
                out.append(name)
        return out

    return asyncio.run(lacking())


def test_a_gc_that_listed_a_rekey_s_notice_before_the_rekey_named_it_does_not_free_it(make_daemon, store_dir, tmp_path):
    a, b, sid = shared_pair(make_daemon, store_dir)
    b.stop()  # (away through the rekey: it takes the notice once it is back)
    held = {p: str(tmp_path / p) for p in ("rekey.notice_put", "gc.freeing")}
    a.env["SESSIOND_TEST_PAUSE"] = ",".join(f"{p}:{f}" for p, f in held.items())
    a.restart()
    env = dict(os.environ)
    rekey = popen_cli(["rekey", sid, "--home", a.home], env=env, stdout=subprocess.DEVNULL)
    gc = None
    try:
        _arrived(held["rekey.notice_put"])  # the notice put, the old slot not naming it yet: a candidate
        gc = popen_cli(["gc", "--grace", "0", "--home", a.home], env=env, stdout=subprocess.DEVNULL)
        _arrived(held["gc.freeing"])  # gc listed its candidates, the notice among them
        os.unlink(held["rekey.notice_put"])
        assert rekey.wait(30) == 0  # the notice named, the keys and the slot switched
        os.unlink(held["gc.freeing"])
        assert gc.wait(30) == 0
    finally:
        for p in (rekey, gc):
            if p is not None and p.poll() is None:
                p.kill()
            if p is not None:
                p.wait()
    assert _slots_lacking(store_dir) == []  # the old slot's notice is still there for B to take
    a.env.pop("SESSIOND_TEST_PAUSE")
    a.restart()
    a.client().append(sid, "user", "after the rekey")
    b.start()

    def took() -> bool:
        b.client().sync(sid, wait=True, timeout=10)
        return session_key(b, sid) == session_key(a, sid) and "after the rekey" in contents(b, sid)

    wait_for(took, timeout=30, what="B takes the rekey and reads what A wrote under the new key")
    assert cli_json(b.home, "verify")["ok"]
