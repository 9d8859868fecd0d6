"""What the requests waiting for a hung store hear when the daemon stops. A `sync --wait`'s pull (and its
check of the store before the push) went on past the stop's release of the waits, so the stop cut it after
its grace: the command said the connection broke. And a `share` or an `rm` whose push the stop cut short was
refused as if the store had refused it ("not pushed yet", "sync once the store answers"), and an `end` said
its store did not take it. Now a waited sync is answered at once, saying the daemon is stopping, share and rm
are refused as `stopping` (nothing done, the stop named, and the way on once the daemon runs again), and end
says its push waits for the daemon's next start. Real processes: a portal that hangs."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time

from conftest import DaemonProc, popen_cli, run_cli, wait_for
from servers.s5portal import Portal, Threaded, make_app


def test_requests_waiting_for_a_hung_store_are_told_the_daemon_is_stopping(tmp_path):
    p = Portal()
    portal = Threaded(make_app(p)).start()
    p.authority = f"127.0.0.1:{portal.port}"
    d = DaemonProc(str(tmp_path / "home"), f"s5+http://{p.authority}")
    procs: list[subprocess.Popen] = []
    try:
        d.start()
        with d.client() as c:
            sid = c.create_session(name="shared", initial_messages=[{"role": "user", "content": "hi"}])["id"]
            c.share(sid)
        p.faults.hang = asyncio.Event()  # every request parked: a store that takes connections, answers nothing
        with d.client() as c:
            c.append(sid, "user", "waits for its push")
        for argv in (["sync", sid, "--wait", "--timeout", "120"], ["rm", sid], ["share", sid], ["end", sid]):
            seen = len(p.requests)
            procs.append(
                popen_cli(
                    [*argv, "--home", d.home], env=dict(os.environ), stdout=subprocess.PIPE, stderr=subprocess.PIPE
                )
            )
            wait_for(lambda seen=seen: len(p.requests) > seen, timeout=30)  # its request parked at the store
        t0 = time.monotonic()
        res = run_cli(d.home, "stop", timeout=60)
        assert res.returncode == 0 and "killed" not in res.stdout + res.stderr, res
        said = [proc.communicate(timeout=30) for proc in procs]
        took = time.monotonic() - t0
        (sync_out, sync_err), (_, rm_err), (_, share_err), (end_out, _) = [(o.decode(), e.decode()) for o, e in said]
        # main: "the connection to the daemon broke" after the stop's 3 s grace (and 3 s more)
        assert "the daemon is stopping" in sync_out and "broke" not in sync_err, (sync_out, sync_err)
        assert "sessiond start" in sync_out, sync_out
        # main: "... not pushed yet (its store has not taken them) ... once the store answers"
        assert "the daemon is stopping" in rm_err and "was not deleted" in rm_err, rm_err
        assert f"{sid}` again" in rm_err and "sessiond start" in rm_err, rm_err
        assert "the daemon is stopping" in share_err and "not shared" in share_err, share_err
        # main: "(its store did not take it: `sessiond sync ID --wait` pushes it, and says why not)"
        assert "snapshot: not pushed yet (the daemon is stopping" in end_out, end_out
        assert [proc.returncode for proc in procs] == [1, 1, 1, 0]
        assert took < 6, took  # answered at once, not at the end of the requests' grace
        p.faults.hang.set()
        p.faults.hang = None
        d.start()
        with d.client() as c:
            assert c.get_session(sid)["id"] == sid  # not deleted
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if p.faults.hang is not None:
            portal.loop.call_soon_threadsafe(p.faults.hang.set)
        d.stop()
        portal.stop()
