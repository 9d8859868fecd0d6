"""What the requests waiting for a hung store hear when the daemon stops. A `sync --wait`'s pull (and its
check of the store before the push) went on past the stop's release of the waits, so the stop cut it after
its grace: the command said the connection broke. And a `share` or an `rm` whose push the stop cut short was
refused as if the store had refused it ("not pushed yet", "sync once the store answers"), and an `end` said
its store did not take it. Now a waited sync is answered at once, saying the daemon is stopping, share and rm
are refused as `stopping` (nothing done, the stop named, and the way on once the daemon runs again), and end
says its push waits for the daemon's next start. Real processes: a portal that hangs."""

from __future__ import annotations

import os
import subprocess
import time

from conftest import DaemonProc, killed, popen_cli, run_cli, wait_for
from portalstore import threaded_portal


def _checks(p) -> int:
    """The reads of a head portal `p` has had (each `sync --wait`, rm, share and end checks the store before it
    waits: sync/engine.py sync_now's repair)."""
    return sum(1 for method, path, _ in p.requests if method == "GET" and path == "/s5/registry")


def _accepted(sock: str) -> int:
    """The connections the daemon listening at `sock` has accepted and holds open (Linux: /proc/net/unix, where
    an accepted socket carries its listener's path; state 03, connected)."""
    with open("/proc/net/unix") as f:
        rows = [line.split() for line in f.readlines()[1:]]
    return sum(1 for r in rows if len(r) >= 8 and r[7] == sock and r[5] == "03")


def test_requests_waiting_for_a_hung_store_are_told_the_daemon_is_stopping(tmp_path):
    procs: list[subprocess.Popen] = []
    with threaded_portal() as served:
        p = served.portal
        d = DaemonProc(str(tmp_path / "home"), served.url)
        try:
            d.start()
            sid = served.push_waiting(d)
            sock = os.path.join(d.home, "sessiond.sock")
            for argv in (["sync", sid, "--wait", "--timeout", "120"], ["rm", sid], ["share", sid], ["end", sid]):
                seen, held = _checks(p), _accepted(sock)
                procs.append(
                    popen_cli(
                        [*argv, "--home", d.home], env=dict(os.environ), stdout=subprocess.PIPE, stderr=subprocess.PIPE
                    )
                )
                # in the daemon, its request parked at the store before the next command (else the stop could come
                # before the last command was sent, 1 run in 6 under load: "the connection to the daemon broke" as
                # the listener closed): the first command's sync reads the store (a read of a head, not any request:
                # the poll's, a retry's); the others' wait for that same read (one check of a session's members slot
                # at a time: sync/bounded.py KeyedRuns), none of their own, so each is seen by its two connections
                # the daemon accepted (its notices' event stream, then its request)
                if argv[0] == "sync":
                    wait_for(lambda seen=seen: _checks(p) > seen, timeout=30, what="the sync's check of the store")
                else:
                    wait_for(lambda held=held: _accepted(sock) >= held + 2, timeout=30, what=f"{argv[0]} at the daemon")
            with d.client() as c:  # (end's own mark: the session ended, its push waited for after)
                wait_for(lambda: c.get_session(sid)["status"] == "ended", timeout=30)
            t0 = time.monotonic()
            res = run_cli(d.home, "stop", timeout=60)
            assert res.returncode == 0 and "killed" not in res.stdout + res.stderr, res
            said = [proc.communicate(timeout=30) for proc in procs]
            took = time.monotonic() - t0
            (sync_out, sync_err), (_, rm_err), (_, share_err), (end_out, _) = [
                (o.decode(), e.decode()) for o, e in said
            ]
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
            served.answer()
            d.start()
            with d.client() as c:
                assert c.get_session(sid)["id"] == sid  # not deleted
        finally:
            killed(procs)
            d.stop()
