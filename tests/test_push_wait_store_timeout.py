"""`rm` and `end` of a shared session (and its expiry, with delete_expired) wait for its push as long as a store
call may take, config.toml's store_timeout, as a share does: they waited a fixed 10 s whatever it said, so a
script that set store_timeout = 2 to hear of a store down sooner still waited 10 s for each. Real processes: a
portal that hangs."""

from __future__ import annotations

import asyncio
import re
import time

from conftest import DaemonProc, run_cli, write_config
from servers.s5portal import Portal, Threaded, make_app


def test_rm_and_end_wait_for_their_push_as_long_as_store_timeout(tmp_path):
    p = Portal()
    portal = Threaded(make_app(p)).start()
    p.authority = f"127.0.0.1:{portal.port}"
    d = DaemonProc(str(tmp_path / "home"), f"s5+http://{p.authority}")
    write_config(d.home, store_timeout=2)
    try:
        d.start()
        with d.client() as c:
            sid = c.create_session(name="shared", initial_messages=[{"role": "user", "content": "hi"}])["id"]
            c.share(sid)
        p.faults.hang = asyncio.Event()  # every request parked: the pushes wait out store_timeout
        with d.client() as c:
            c.append(sid, "user", "waits for its push")
        t0 = time.monotonic()
        res = run_cli(d.home, "rm", sid)
        took = time.monotonic() - t0
        assert res.returncode == 1 and "not pushed yet" in res.stderr, res  # refused: nothing deleted
        assert 1.5 < took < 7, took  # main: 10 s
        left = re.search(r"\((\d+) s left\)", res.stderr)  # its countdown: of store_timeout (main: of 10 s)
        assert left is None or int(left[1]) <= 2, res.stderr
        t0 = time.monotonic()
        res = run_cli(d.home, "end", sid)
        took = time.monotonic() - t0
        assert res.returncode == 0 and "snapshot: not pushed yet" in res.stdout, res
        assert 1.5 < took < 7, took  # main: 10 s
    finally:
        if p.faults.hang is not None:
            portal.loop.call_soon_threadsafe(p.faults.hang.set)
        d.stop()
        portal.stop()
